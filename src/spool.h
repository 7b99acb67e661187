/* spool.h - the spool directories and the transitions between them.
 *
 * A state is a directory and a transition is one rename(2), always relative to directory fds.
 * Files are written under a dot-name (ignored by everyone), fsynced, then renamed into place.
 * See spool-layout.md for the protocol this implements. */
#ifndef SPOOL_H
#define SPOOL_H

#include <dirent.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "syncset.h"

struct buf;

enum spool_dir {
	SPOOL_TMP,               /* clients' staging area */
	SPOOL_NEW,               /* pending */
	SPOOL_RUNNING,           /* claimed by a daemon: ID@HOST.json */
	SPOOL_DEFERRED,          /* waiting for a retry; mtime = next attempt */
	SPOOL_DONE,              /* succeeded */
	SPOOL_FAILED,            /* failed */
	SPOOL_HOLD,              /* held by an operator: no daemon looks at it */
	SPOOL_CONTROL,           /* an operator's requests to the daemons (control.h) */
	SPOOL_OUTBOX,            /* the daemon's deliveries (webhooks, hooks) waiting to go out */
	SPOOL_NDIRS,
};
#define SPOOL_BIT(d) (1u << (d))

/* A directory as opened, to tell it from what its name names later (spool_recheck_dirs). */
struct spool_dir_id {
	uint64_t dev, ino;
	int64_t btime_ns;        /* its birth: an inode number used again is another directory;
				  * 0 where the file system does not say */
};

/* What the spool's file system's journal may be trusted with (spool_journal_decide). */
enum spool_journal {
	SPOOL_JOURNAL_NONE,         /* no ordering to lean on: every barrier syncs */
	SPOOL_JOURNAL_ORDERED,      /* a journaled ext4 whose commits follow a cache flush */
	SPOOL_JOURNAL_NO_BARRIER,   /* journaled, but mounted nobarrier: no sync is durable */
};

struct spool {
	char *path;
	int root_fd;
	int fd[SPOOL_NDIRS];
	char *host_id;
	/* This run of the daemon: random, new at every spool_open (a start). Named in the host lock
	 * and in this run's ledger file, so other hosts tell when a run has ended (§17). */
	char run[17];
	int64_t clock_offset_ms;    /* the file server's clock minus ours, at the last probe */
	int64_t clock_probed_mono;  /* mono_ms of that probe; 0: never */
	bool clock_failing;         /* the last probe failed (logged once) */
	long fs_type;               /* statfs f_type of the spool's file system */
	bool ino_by_name;           /* its inode numbers follow names, not files (sshfs): fileid.h */
	enum spool_journal journal_kind;   /* spool_fs_journal's answer (NONE: no journal to lean on) */
	enum sync_mode sync_mode;   /* [spool] sync: how a batch's writes are made durable */
	/* renameat2's flags the file system refused (EINVAL on NFS, sshfs, other FUSE): not asked
	 * again, the fallback goes straight on (any thread). */
	atomic_bool no_exchange, no_noreplace;
	/* Which directory fd[d] is: a number of the whole process, new at spool_open and at each
	 * swap of a replaced directory (dup3), so that a thread's pin (spool_pin) knows whether it
	 * still holds the directory d is now. */
	_Atomic uint64_t dir_gen[SPOOL_NDIRS];
	/* What the root and fd[] were opened on, and what spool_recheck_dirs said last of each
	 * (enum spool_dir_verdict; said once, again when it changes). Loop thread only. */
	struct spool_dir_id root_opened, opened[SPOOL_NDIRS], refused[SPOOL_NDIRS];
	uint64_t root_mount;        /* statx's mount id of the root; 0: unknown */
	uint8_t dir_said[SPOOL_NDIRS];
	bool root_moved;            /* the spool's path names another directory (said once) */
	uint32_t own_uid;           /* the owner the daemon's files get here (dirtrust_owner_ok) */
};

/* What tells one file at a name from another, or from itself changed. */
struct file_id {
	uint64_t dev, ino;
	int64_t size, mtime_ns, ctime_ns;
	uint32_t nlink, mode;
};
void spool_file_id(struct file_id *id, const struct stat *st);

struct spool_entry {
	char *name;
	int64_t mtime_ns;
	struct file_id id;       /* as listed (lstat) */
};

/* Opens (creating what is missing) the spool at path. Returns 0 or -1 (logged). */
int spool_open(struct spool *sp, const char *path, const char *host_id);
/* Opens an existing spool for a client and creates nothing: 0, or -1 with errno (ENOENT or
 * ENOTDIR for no such directory, EINVAL when it has no new/ and so is not a spool).
 * Directories an older spool lacks (hold/, control/) have fd -1. */
int spool_attach(struct spool *sp, const char *path);
void spool_close(struct spool *sp);
const char *spool_dir_name(enum spool_dir d);

/* What a state directory's name names now, against the directory opened (spool_dir_judge). */
enum spool_dir_verdict {
	SPOOL_DIR_SAME,          /* the directory opened */
	SPOOL_DIR_REPLACED,      /* another directory of the spool's mount: followed */
	SPOOL_DIR_MISSING,       /* nothing: the one opened is kept, nothing is made */
	SPOOL_DIR_NOT_DIR,       /* a file or a symlink */
	SPOOL_DIR_UNREADABLE,    /* the name cannot be looked up (EACCES, EIO) */
	SPOOL_DIR_OTHER_FS,      /* a directory of another file system: refused, as at start-up */
	SPOOL_DIR_OTHER_MOUNT,   /* the spool's file system through another mount: refused */
	SPOOL_DIR_OWN_REPLACED,  /* running/ or outbox/ replaced: the daemon's own state, not followed */
	SPOOL_DIR_UNTRUSTED,     /* owned or writable by others than the daemon's user (dirtrust.h) */
};
/* What a look at a name found (statx): err is its errno, 0 if found. */
struct spool_dir_look {
	int err;
	uint32_t mode, uid;
	struct spool_dir_id id;
	uint64_t mount;          /* 0: unknown */
};
/* Pure: the verdict on look, for the directory opened as opened (held_alive: it still has a
 * name; only asked where a birth time is missing) in a spool whose root is on root_dev, through
 * root_mount (0: unknown). */
enum spool_dir_verdict spool_dir_judge(const struct spool_dir_id *opened, bool held_alive,
				       const struct spool_dir_look *look, uint64_t root_dev,
				       uint64_t root_mount);
/* At the daemon's periodic rescan, never on a job's path (one statx per directory, and one of
 * the root's path): each state directory an operator replaced (removed and made again, or moved
 * aside and a new one made) is opened again, said once. Its descriptor's number stays, swapped
 * with dup3(2): a helper thread holding it uses the new directory from its next call, a call in
 * progress ends in the old one, and no number is ever closed under a thread. Returns the
 * directories swapped (SPOOL_BIT), for the caller to watch and list again. A missing directory
 * is said once and not made (a restart makes it; the operator may be moving it); one on another
 * file system or mount is refused as at start-up, said once. Loop thread only. */
unsigned spool_recheck_dirs(struct spool *sp);
/* Whether the spool's path still names the root opened. The root is never followed (its jobs,
 * leases and host lock are in the one opened; the path may come to name what is no spool, such
 * as a mount point under a file system unmounted lazily): a change is only said, once each
 * way. spool_recheck_dirs asks it too. Loop thread only. */
bool spool_root_recheck(struct spool *sp);

/* Lists a directory's entries, skipping names that start with '.', oldest mtime first (then
 * by name). Returns the count, or -1 (logged). *out is an array the caller frees with
 * spool_entries_free. */
long spool_list(struct spool *sp, enum spool_dir d, struct spool_entry **out);
void spool_entries_free(struct spool_entry *e, long n);
/* spool_list (stat_each) or spool_list_names for any directory of the spool (dirfd), such as
 * providers/NAME/calls: -1 with errno, not logged. */
long spool_list_at(int dirfd, bool hidden, bool stat_each, struct spool_entry **out);
/* The same, reading no more than max names from the directory (a runaway or hostile one may
 * hold millions): -1 with errno E2BIG past them. */
long spool_list_at_most(int dirfd, bool hidden, bool stat_each, long max, struct spool_entry **out);
/* The names alone, unsorted, with what getdents says of each: id.ino (d_ino) and the type
 * bits of id.mode (0 where the file system does not say); mtime_ns is 0. hidden: the names
 * that start with '.' instead. The caller stats only what it needs (spool_entry_stat). */
long spool_list_names(struct spool *sp, enum spool_dir d, bool hidden, struct spool_entry **out);
/* Fills e's mtime and identity (lstat). -1 with errno if the name is gone. */
int spool_entry_stat(struct spool *sp, enum spool_dir d, struct spool_entry *e);
/* Reads a directory's names as they come (getdents: d_ino and d_type, no stat); the caller
 * skips names that start with '.' and closedir()s it. NULL if it cannot be opened (logged). */
DIR *spool_opendir(struct spool *sp, enum spool_dir d);
/* spool_list for the names that start with '.' (temporary files, the daemon's sidecars). */
long spool_list_hidden(struct spool *sp, enum spool_dir d, struct spool_entry **out);

enum spool_read {
	SPOOL_READ_OK = 0,
	SPOOL_READ_GONE,         /* no such file (someone else took it) */
	SPOOL_READ_NOT_REGULAR,  /* symlink, FIFO, socket, device or directory */
	SPOOL_READ_LINKED,       /* more than one hard link */
	SPOOL_READ_TOO_BIG,
	SPOOL_READ_ERROR,        /* I/O error: errno is set */
};
/* Reads a client's file as hostile: never follows a symlink, never blocks on a FIFO, refuses
 * anything but a regular file with one link and at most max bytes. st gets its fstat (st_mode
 * is 0 when it could not be opened). */
enum spool_read spool_read_file(int dirfd, const char *name, size_t max, struct buf *out,
				struct stat *st);
/* The same, and on SPOOL_READ_OK *fd_out keeps the file open (the caller closes it): what is
 * done later to the file read is done to that inode, whatever its name names by then. */
enum spool_read spool_read_keep(int dirfd, const char *name, size_t max, struct buf *out,
				struct stat *st, int *fd_out);
/* The same for one of the daemon's own files that a kill between link(2) and the unlink(2)
 * of its temporary name may leave with up to max_links links (the host lock). */
enum spool_read spool_read_linked(int dirfd, const char *name, size_t max, nlink_t max_links,
				  struct buf *out, struct stat *st);
/* The same checks (a file over max is SPOOL_READ_TOO_BIG), but only its first head bytes are
 * read (all of it when it is shorter): what a reader needs of the beginning of a large file. */
enum spool_read spool_read_head(int dirfd, const char *name, size_t max, size_t head,
				struct buf *out, struct stat *st);
const char *spool_read_reason(enum spool_read r);

/* A descriptor of the directory that d is now, which stays that directory until
 * spool_unpin: for a write of several steps, which spool_recheck_dirs may swap a replaced
 * directory in under sp->fd[d] (dup3) between. The calling thread keeps it from pin to pin
 * (no system call) and takes a new one (fcntl, and the close of the one it held) only at its
 * first pin after a swap; a pin inside a pin of the same directory gets the outer one. What a
 * thread keeps is closed at its end, or with the spool (spool_close, on its thread). -1 with
 * errno. */
int spool_pin(struct spool *sp, enum spool_dir d);
/* Ends a pin (errno kept). */
void spool_unpin(struct spool *sp, enum spool_dir d, int fd);
/* rename(2) between spool directories, fixed up for NFS lost replies (Postfix' sane_rename):
 * if rename fails but the source is gone and the target exists, it succeeded. Returns 0 or -1
 * with errno (ENOENT: the source was not there). */
int spool_rename(struct spool *sp, enum spool_dir from, const char *from_name, enum spool_dir to,
		 const char *to_name);
/* rename(2) that never replaces a file already at to/to_name (EEXIST then); link+unlink where
 * RENAME_NOREPLACE is not supported (some NFS and FUSE). */
int spool_rename_noreplace(struct spool *sp, enum spool_dir from, const char *from_name,
			   enum spool_dir to, const char *to_name);
/* A claim's rename, from/from_name to running/running_name, as spool_rename, but never over a
 * file already there (EEXIST: a job of ours left in running/, whose run is not settled) where
 * the file system has RENAME_NOREPLACE; where it lacks it, a plain rename (the daemon knows the
 * jobs it left there, and claims none of their ids meanwhile: dispatch's stranded set). */
int spool_rename_claim(struct spool *sp, enum spool_dir from, const char *from_name,
		       const char *running_name);
int spool_sync_dir(struct spool *sp, enum spool_dir d);
/* Writes data to d/name durably: dot-temp file O_EXCL, write, fsync, rename over name. In a
 * directory a rescan may swap (all but running/ and outbox/), all of it, and an fsync of the
 * directory, in the one it started in (pinned); in running/ and outbox/ the directory is not
 * fsynced (callers batch that). Returns 0 or -1 with errno. */
int spool_write_file(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		     size_t len);
/* The same, but only over an existing d/name (atomically, with RENAME_EXCHANGE where the file
 * system has it): a job file another daemon took away is never recreated. ENOENT if gone. */
int spool_rewrite_file(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		       size_t len);
/* The same in any directory of the spool (dirfd), fsynced only when durable (then the directory
 * too, after the rename); mtime_ms > 0 sets the file's mtime before it is renamed into place
 * (a time kept in an mtime, such as a pause's end, is never seen unset). */
int spool_write_at(struct spool *sp, int dirfd, const char *name, const void *data, size_t len,
		   int64_t mtime_ms, bool durable);
/* Only the temporary file: data written to a new file under spool_temp_name's name for name in
 * dirfd (O_EXCL, never through a link) and fsynced, its name in tmp (NAME_MAX + 1 bytes), for a
 * caller that puts it into place its own way (a link(2) that must not replace). 0, or -1 with
 * errno and nothing left behind. */
int spool_write_temp(struct spool *sp, int dirfd, const char *name, const void *data, size_t len,
		     char *tmp);
/* data to d/name, a new name that only the caller gives (O_EXCL; a leftover there is
 * replaced), fsynced, then d: durable, its name too, before the caller's next step. 0, or -1
 * with errno and nothing left behind. */
int spool_write_aside(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		      size_t len);
/* Group commit (syncset.h), into a staging directory (dirfd), whose files count only once a
 * barrier made them durable and a later step says so (a job's final records, its commit).
 * in_place (only while nothing on disk can say that yet: the job's records in running/ do not
 * say finished): a new name is written in place, no temporary name (a crash leaves a
 * half-written file only where nothing counts it yet), fsynced only when ss syncs file by file.
 * Otherwise, and for a name already there, as spool_write_final_in: it never stands
 * half-written. dirfd is added to what ss's next barrier syncs. */
int spool_write_staged(struct spool *sp, int dirfd, const char *name, const void *data,
		       size_t len, struct syncset *ss, bool in_place);
/* spool_write_file in any directory (dirfd) for a batch, to a final name (not staged behind a
 * barrier): through a temporary file whose bytes are synced before its rename even when ss's
 * barrier is one syncfs (syncset_bytes); dirfd is added to what ss's next barrier syncs. */
int spool_write_final_in(struct spool *sp, int dirfd, const char *name, const void *data,
			 size_t len, struct syncset *ss);
/* spool_rewrite_file in a batch (only over an existing d/name; ENOENT if gone). */
int spool_rewrite_in(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		     size_t len, struct syncset *ss);
/* spool_rewrite_in in two steps, so that the bytes go with one barrier and the name change
 * with a later one: the temporary file for d/name, written as in a batch (its name in tmp,
 * NAME_MAX + 1 bytes; *written_ms: when, mono_ms), then spool_replace_in puts it in place
 * (only over an existing d/name: ENOENT if gone), stamped anew if it waited long (a job
 * file's mtime is its lease), and removes it whenever it fails. */
int spool_write_temp_in(struct spool *sp, enum spool_dir d, const char *name, const void *data,
			size_t len, struct syncset *ss, char *tmp, int64_t *written_ms);
int spool_replace_in(struct spool *sp, enum spool_dir d, const char *tmp, const char *name,
		     int64_t written_ms, struct syncset *ss);
/* Starts a batch's syncset for n_jobs jobs: one syncfs per barrier or file by file, by
 * [spool] sync, the file system and the batch's size; on a journaled ext4 with sync = auto,
 * barriers between name changes alone are left to the journal (syncset_order). */
void spool_syncset(struct spool *sp, struct syncset *ss, size_t n_jobs);
/* Pure: whether the spool's file system keeps name changes in order, from the text of
 * /sys/fs/ext4/DEVICE/journal_task ("<none>" without a journal; NULL if unread), of
 * /proc/fs/ext4/DEVICE/options (NULL if unread), the root's device and those of the
 * directories a batch renames in. NONE without a journal, with journal_async_commit (its commit
 * block is not behind a cache flush) or if a directory is on another device; NO_BARRIER when
 * mounted nobarrier (no sync reaches the disk: the journal keeps the order only across a
 * kernel crash, and nothing is durable across a power cut). */
enum spool_journal spool_journal_decide(const char *journal_task, const char *options,
					dev_t root_dev, const dev_t *dir_devs, size_t n_dirs);
/* spool_journal_decide for the file system of root_fd and the directories dir_fds (at most
 * SPOOL_NDIRS); NONE when /sys or /proc cannot be read (another file system). */
enum spool_journal spool_fs_journal(int root_fd, const int *dir_fds, size_t n_dirs);
/* The name spool_write_file writes under: ".NAME.HOST.PID.RANDOM.tmp", where a NAME longer
 * than SPOOL_TEMP_NAME_PART is cut to 64 characters and "~" and a hash of the whole name, so
 * that every name fits in NAME_MAX for every valid id and host id. -1 (ENAMETOOLONG) if not. */
#define SPOOL_TEMP_NAME_PART 100
int spool_temp_name(char *out, size_t size, const char *name, const char *host, long pid,
		    unsigned rnd);
/* The pid and number for a temporary name, without a system call per name: the pid is cached
 * (and asked again in a forked child), the number counts up from a random start, so names never
 * repeat within a process and hardly across processes (O_EXCL catches the rest). */
long spool_temp_unique(unsigned *seq);
/* Whether name is a temporary file of host's (spool_temp_name): a restart removes its own. */
bool spool_is_our_temp(const char *name, const char *host);
/* Whether a move may replace a file at its target. */
enum spool_replace {
	SPOOL_NEVER_REPLACE,       /* EEXIST; link and unlink where RENAME_NOREPLACE is lacking */
	SPOOL_NOREPLACE_IF_NATIVE, /* EEXIST where the file system has RENAME_NOREPLACE, else a
				    * plain rename: one system call, as ever (a claim, a deferral) */
};
/* Replaces the content of running/running_name with data (atomically), sets its mtime to
 * mtime_ms, moves it to dest/dest_name, never over a file there as how says, and fsyncs both
 * directories: one job's state change that carries its records along (a deferral, a requeue).
 * Returns 0 or -1 with errno. */
int spool_move_rewritten(struct spool *sp, const char *running_name, enum spool_dir dest,
			 const char *dest_name, const void *data, size_t len, int64_t mtime_ms,
			 enum spool_replace how);
/* The file server's clock, in wall ms: the local clock plus the offset measured by writing a
 * probe file in running/ (at most every 10 s). Every comparison with a file's time uses it, so
 * clock skew between hosts does not matter. A failed probe is logged and the last offset kept. */
int64_t spool_server_now(struct spool *sp);
/* Free space for an unprivileged writer on the spool's file system, in MiB (-1 on error);
 * a file system with almost no free inodes counts as full. */
long spool_free_mb(struct spool *sp);
/* Whether the directory open as fd may hold what the daemon believes: owned by its user (or
 * root) and writable by no one else (dirtrust.h, DIRTRUST_TRUSTED). */
bool spool_dir_trusted(const struct spool *sp, int fd);
/* Makes name (ledger/, providers/) in the root. The root lets clients make a name it lacks
 * (sticky, not closed): an entry there that someone else than the daemon's user owns is moved
 * aside as NAME.untrusted.MS.R (the root's owner may), said, and a new one made. 0, or -1
 * (errno; EPERM: someone else's entry that could not be moved). */
int spool_shared_dir_make(struct spool *sp, const char *name);
/* Whether dirfd/name is there (lstat: a dangling symlink is). */
bool spool_exists(int dirfd, const char *name);
/* Whether the daemon's user wrote a file: its owner is our user, the owner a file this daemon
 * made in running/ got at start (the same user, seen through an NFS uid mapping), or root (who
 * can do anything the daemon can). Not whoever owns running/: spool_open refuses a running/ of
 * anyone else. */
bool spool_written_by_daemon(const struct spool *sp, const struct stat *st);
/* Whether running/name is still there: a job reclaimed by another host is gone (fencing). */
bool spool_still_ours(struct spool *sp, const char *running_name);
/* The name a job has in running/: "ID@HOST.json". Caller frees. */
char *spool_running_name(const struct spool *sp, const char *id);
/* Whether name[start, end) is BODY@HOST, both not empty, with one '@' (neither task ids nor
 * host ids hold one): every name a host gives what it holds has this at its heart. *at gets
 * the '@'. Pure. */
bool spool_split_at(const char *name, size_t start, size_t end, const char **at);
/* Whether name is a job file of running/, any host's: "ID@HOST.json", ID and HOST not empty, no
 * '@' in either, no leading '.' (sidecars, staging directories). An entry of outbox/,
 * MSGID.TARGET@HOST.json, is named alike. Fills id and host (either may
 * be NULL); false as well when a part does not fit its buffer. Pure. */
bool spool_running_id(const char *name, char *id, size_t id_size, char *host, size_t host_size);

#endif
