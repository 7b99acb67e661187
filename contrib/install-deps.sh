#!/bin/sh
# Installs what imgspool needs to build and test, on Debian/Ubuntu, only when something is missing.
# Every package any test uses is here: no test installs anything itself (a missing tool fails the
# test, saying to run this script).
#   build:            gcc make pkg-config libcurl4-openssl-dev libjansson-dev libinih-dev
#                     libssl-dev (libcrypto: SHA-256 and HMAC for uploads and webhooks)
#   fuzzers:          clang libclang-rt-14-dev
#   unit tests:       libtsan2 (ThreadSanitizer's runtime, usually there with gcc)
#   tests:            perl (prove) python3
#   NFS test:         openssh-server openssh-client sshfs fuse3 (tests/lib/sshfs.py)
#   service tests:    prometheus (promtool), mandoc and man-db (man pages), systemd and procps
#                     (systemd-analyze; the unit's ExecReload runs kill)
#   notify test:      util-linux (prlimit: a daemon started with a lower soft limit of open files)
#   group commit test: e2fsprogs and mount (mkfs.ext4, losetup, mount: a journaled ext4 on a
#                     loop device, where sync = auto leaves a batch's renames to the journal);
#                     so does the journal crash test (also umount, and EXT4_IOC_SHUTDOWN)
#   CLI tests:        chromium (the gallery, headless); nodejs (contrib/clients/)
#   outputs tests:    nodejs npm (unless present), then tests/node's lock: s3rver,
#                     @smithy/signature-v4, standardwebhooks
#   make bench:       wrk (the raw HTTP ceiling), strace (system calls per job), time (GNU time:
#                     the peak RSS of one imgspool run), e2fsprogs and mount (mkfs.ext4, losetup,
#                     mount: the ext4 case's own journaled file system on a loop device),
#                     linux-perf (perf stat: its fsyncs per job, counted without slowing them),
#                     valgrind (callgrind: user-space instructions per job, per thread)
set -e
need=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in gcc make pkg-config libcurl4-openssl-dev libjansson-dev libinih-dev libssl-dev libtsan2 perl \
	python3 clang libclang-rt-14-dev openssh-server openssh-client sshfs fuse3 \
	prometheus mandoc man-db systemd faketime strace chromium wrk time util-linux \
	e2fsprogs mount linux-perf valgrind; do
	have_pkg "$p" || need="$need $p"
done
# Node.js and npm from Debian unless the machine already has them (another build of node).
command -v npm >/dev/null 2>&1 || need="$need nodejs npm"
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
if [ -n "$need" ]; then
	echo "installing:$need"
	export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a
	# The postinst scripts of openssh-server and prometheus would start system services: a
	# policy-rc.d answering 101 ("action forbidden") stops invoke-rc.d from doing so.
	policy=/usr/sbin/policy-rc.d
	made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# temporary, from imgspool contrib/install-deps.sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 755 "$policy"
		made_policy=1
	fi
	trap 'if [ -n "$made_policy" ]; then $SUDO rm -f "$policy"; fi' EXIT
	$SUDO apt-get update -qq
	$SUDO apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold $need
fi
# The tests' npm peers, exactly the versions in package-lock.json; again only when it changed.
node_dir="$(dirname "$0")/../tests/node"
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] ||
   [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
	(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
