/* version.h - the release both binaries report with --version. */
#ifndef VERSION_H
#define VERSION_H

#define IMGSPOOL_VERSION "0.2.0"

#endif
