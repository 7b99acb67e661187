/* spool.c - directories and transitions, every call relative to a directory fd (like nq).
 *
 * Failures are returned with errno to the caller, who knows the job and logs. ENOENT from a
 * rename is normal: another daemon won the race. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "dirtrust.h"
#include "fileid.h"
#include "log.h"
#include "spool.h"
#include "syncset.h"
#include "util.h"
#include "banned.h"

static const char *dir_names[SPOOL_NDIRS] = {
	[SPOOL_TMP] = "tmp", [SPOOL_NEW] = "new", [SPOOL_RUNNING] = "running",
	[SPOOL_DEFERRED] = "deferred", [SPOOL_DONE] = "done", [SPOOL_FAILED] = "failed",
	[SPOOL_HOLD] = "hold", [SPOOL_CONTROL] = "control",
	[SPOOL_OUTBOX] = "outbox",
};

const char *spool_dir_name(enum spool_dir d)
{
	return dir_names[d];
}

/* What dirfd/name is (name "": dirfd itself), in one statx: the identity, the birth time where
 * the file system keeps one, and the mount it is reached through (Linux 5.8; 0 if unknown). */
static void look_at(int dirfd, const char *name, int flags, struct spool_dir_look *look)
{
	struct statx stx;
	*look = (struct spool_dir_look){ 0 };
	if (statx(dirfd, name, flags | (*name ? 0 : AT_EMPTY_PATH),
		  STATX_TYPE | STATX_MODE | STATX_UID | STATX_INO | STATX_BTIME | STATX_MNT_ID,
		  &stx) < 0) {
		look->err = errno;
		return;
	}
	look->mode = stx.stx_mode;
	look->uid = stx.stx_uid;
	look->id = (struct spool_dir_id){
		.dev = makedev(stx.stx_dev_major, stx.stx_dev_minor), .ino = stx.stx_ino,
		.btime_ns = stx.stx_mask & STATX_BTIME ? (int64_t)stx.stx_btime.tv_sec * 1000000000 +
			    stx.stx_btime.tv_nsec : 0,
	};
	look->mount = stx.stx_mask & STATX_MNT_ID ? stx.stx_mnt_id : 0;
}

static bool same_dir(const struct spool_dir_id *a, const struct spool_dir_id *b)
{
	return a->dev == b->dev && a->ino == b->ino &&
	       (!a->btime_ns || !b->btime_ns || a->btime_ns == b->btime_ns);
}

/* Whether a directory found as look may be a state directory of a spool whose root is on
 * root_dev through root_mount: REPLACED if it may, else why not. */
static enum spool_dir_verdict placement(const struct spool_dir_look *look, uint64_t root_dev,
					uint64_t root_mount)
{
	/* rename(2) across file systems fails with EXDEV: every state must be on one. */
	if (look->id.dev != root_dev)
		return SPOOL_DIR_OTHER_FS;
	/* Nor through another mount of it (a bind mount: the same device). */
	if (look->mount && root_mount && look->mount != root_mount)
		return SPOOL_DIR_OTHER_MOUNT;
	return SPOOL_DIR_REPLACED;
}

/* The same words at start-up and later. */
static const char *refused_why(enum spool_dir_verdict v)
{
	return v == SPOOL_DIR_OTHER_FS ? "is not on the same file system as the spool" :
	       "is another mount than the spool (a bind mount?): a rename into it fails with EXDEV";
}

enum spool_dir_verdict spool_dir_judge(const struct spool_dir_id *opened, bool held_alive,
				       const struct spool_dir_look *look, uint64_t root_dev,
				       uint64_t root_mount)
{
	if (look->err)
		return look->err == ENOENT ? SPOOL_DIR_MISSING :
		       look->err == ENOTDIR || look->err == ELOOP ? SPOOL_DIR_NOT_DIR : SPOOL_DIR_UNREADABLE;
	if (!S_ISDIR(look->mode))
		return SPOOL_DIR_NOT_DIR;
	if (same_dir(opened, &look->id) && held_alive)
		return SPOOL_DIR_SAME;
	return placement(look, root_dev, root_mount);
}

/* What d is to whom it trusts (dirtrust.h). */
static enum dirtrust_kind trust_kind(enum spool_dir d)
{
	switch (d) {
	case SPOOL_TMP:
	case SPOOL_NEW:
		return DIRTRUST_CLIENTS;
	case SPOOL_RUNNING:
	case SPOOL_CONTROL:
	case SPOOL_OUTBOX:
		return DIRTRUST_TRUSTED;
	default:
		return DIRTRUST_DAEMON;
	}
}

/* The owner this daemon's files get in running/ (the NFS server may map it: root squashed to
 * nobody), from a file made and removed at once; our euid if none can be made. */
static uint32_t own_uid_in(int dirfd, const char *host_id)
{
	char name[NAME_MAX + 1];
	unsigned seq = 0;
	long pid = spool_temp_unique(&seq);
	struct stat st;
	if (spool_temp_name(name, sizeof(name), "owner", host_id, pid, seq) < 0)
		return (uint32_t)geteuid();
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return (uint32_t)geteuid();
	uint32_t uid = fstat(fd, &st) == 0 ? (uint32_t)st.st_uid : (uint32_t)geteuid();
	close(fd);
	unlinkat(dirfd, name, 0);
	return uid;
}

/* Refuses (-1, logged) a directory at path of kind found as look that others than the daemon's
 * user could have made or may write where the daemon trusts what is in it; warns where it only
 * might lose what it put there. */
static int trust_at_start(const struct spool *sp, const char *path, const char *name,
			  enum dirtrust_kind kind, const struct spool_dir_look *look)
{
	uint32_t euid = (uint32_t)geteuid();
	enum dirtrust_verdict v = dirtrust_judge(kind, look->uid, look->mode, euid, sp->own_uid);
	if (v == DIRTRUST_OK)
		return 0;
	char why[320];
	dirtrust_explain(why, sizeof(why), v, look->uid, look->mode, euid);
	if (v == DIRTRUST_WARN_WRITABLE) {
		log_warn("'%s%s%s' %s", path, *name ? "/" : "", name, why);
		return 0;
	}
	return error("refusing the spool: '%s%s%s' %s (spool-layout.md §12)", path, *name ? "/" : "",
		     name, why);
}

/* The root, each state directory, and keyshare's ledger/ and providers/ where they are. */
static int trust_spool(struct spool *sp, const char *path, const struct spool_dir_look *root)
{
	if (trust_at_start(sp, path, "", DIRTRUST_ROOT, root) < 0)
		return -1;
	struct spool_dir_look look;
	for (int i = 0; i < SPOOL_NDIRS; i++) {
		look_at(sp->fd[i], "", 0, &look);
		if (look.err)
			return error("cannot stat '%s/%s': %s", path, dir_names[i], strerror(look.err));
		if (trust_at_start(sp, path, dir_names[i], trust_kind((enum spool_dir)i), &look) < 0)
			return -1;
	}
	static const char *const shared[] = { "ledger", "providers" };
	for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++) {
		look_at(sp->root_fd, shared[i], AT_SYMLINK_NOFOLLOW, &look);
		if (!look.err && S_ISDIR(look.mode) &&
		    trust_at_start(sp, path, shared[i], DIRTRUST_TRUSTED, &look) < 0)
			return -1;
	}
	return 0;
}

/* Process-wide, so that no two spools (a test opens several) share one (spool.h, dir_gen). */
static atomic_uint_fast64_t dir_gens;

static uint64_t next_dir_gen(void)
{
	return (uint64_t)atomic_fetch_add(&dir_gens, 1) + 1;
}

int spool_open(struct spool *sp, const char *path, const char *host_id)
{
	memset(sp, 0, sizeof(*sp));
	for (int i = 0; i < SPOOL_NDIRS; i++)
		sp->fd[i] = -1;
	sp->path = xstrdup(path);
	sp->host_id = xstrdup(host_id);
	xsnprintf(sp->run, sizeof(sp->run), "%016" PRIx64, random64());
	if (mkdir(path, 0777) < 0 && errno != EEXIST)
		return error("cannot create spool '%s': %s", path, strerror(errno));
	sp->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->root_fd < 0)
		return error("cannot open spool '%s': %s", path, strerror(errno));
	struct spool_dir_look root, look;
	struct statfs fs;
	look_at(sp->root_fd, "", 0, &root);
	if (root.err)
		return error("cannot stat spool '%s': %s", path, strerror(root.err));
	sp->root_opened = root.id;
	sp->root_mount = root.mount;
	/* Whether syncfs(2) can stand for the fsyncs of a batch (syncset.h). */
	sp->fs_type = fstatfs(sp->root_fd, &fs) == 0 ? (long)fs.f_type : 0;
	for (int i = 0; i < SPOOL_NDIRS; i++) {
		if (mkdirat(sp->root_fd, dir_names[i], 0777) < 0 && errno != EEXIST)
			return error("cannot create '%s/%s': %s", path, dir_names[i], strerror(errno));
		sp->fd[i] = openat(sp->root_fd, dir_names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sp->fd[i] < 0)
			return error("cannot open '%s/%s': %s", path, dir_names[i], strerror(errno));
		look_at(sp->fd[i], "", 0, &look);
		if (look.err)
			return error("cannot stat '%s/%s': %s", path, dir_names[i], strerror(look.err));
		enum spool_dir_verdict v = placement(&look, root.id.dev, root.mount);
		if (v != SPOOL_DIR_REPLACED)
			return error("'%s/%s' %s", path, dir_names[i], refused_why(v));
		sp->opened[i] = look.id;
		atomic_store(&sp->dir_gen[i], next_dir_gen());
	}
	sp->own_uid = own_uid_in(sp->fd[SPOOL_RUNNING], sp->host_id);
	/* Someone else's at those names moved aside before they are judged (keyshare makes them). */
	static const char *const shared[] = { "ledger", "providers" };
	struct stat st;
	for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]); i++)
		if (fstatat(sp->root_fd, shared[i], &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    !spool_written_by_daemon(sp, &st))
			spool_shared_dir_make(sp, shared[i]);   /* a failure is judged below */
	if (trust_spool(sp, path, &root) < 0)
		return -1;
	/* Whether a batch's name changes may be left to the journal to keep in order: every
	 * directory a batch renames in (running/, done/, failed/) is read, not the root alone. */
	const int dirs[] = { sp->fd[SPOOL_RUNNING], sp->fd[SPOOL_DONE], sp->fd[SPOOL_FAILED] };
	sp->journal_kind = spool_fs_journal(sp->root_fd, dirs, sizeof(dirs) / sizeof(dirs[0]));
	sp->ino_by_name = fileid_numbers_by_name(sp->root_fd);
	return 0;
}

int spool_attach(struct spool *sp, const char *path)
{
	memset(sp, 0, sizeof(*sp));
	for (int i = 0; i < SPOOL_NDIRS; i++)
		sp->fd[i] = -1;
	sp->path = xstrdup(path);
	sp->host_id = xstrdup("client");
	sp->own_uid = (uint32_t)geteuid();
	sp->root_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->root_fd < 0)
		return -1;
	for (int i = 0; i < SPOOL_NDIRS; i++) {
		sp->fd[i] = openat(sp->root_fd, dir_names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		atomic_store(&sp->dir_gen[i], next_dir_gen());
	}
	if (sp->fd[SPOOL_NEW] < 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

static void unpin_spool(const struct spool *sp);

void spool_close(struct spool *sp)
{
	unpin_spool(sp);
	for (int i = 0; i < SPOOL_NDIRS; i++)
		if (sp->fd[i] >= 0)
			close(sp->fd[i]);
	if (sp->root_fd > 0)
		close(sp->root_fd);
	free(sp->path);
	free(sp->host_id);
	memset(sp, 0, sizeof(*sp));
}

bool spool_root_recheck(struct spool *sp)
{
	struct spool_dir_look named;
	look_at(AT_FDCWD, sp->path, 0, &named);
	bool moved = named.err || !same_dir(&sp->root_opened, &named.id);
	if (moved && !sp->root_moved)
		log_warn("'%s' is no longer the directory this daemon opened (moved, replaced, or a "
			 "file system mounted over it or unmounted from under it): it goes on with the "
			 "one it opened, its jobs and the limits it keeps with the hosts there; restart "
			 "it to use what '%s' is now", sp->path, sp->path);
	else if (!moved && sp->root_moved)
		log_info("'%s' is again the directory this daemon opened", sp->path);
	sp->root_moved = moved;
	return !moved;
}

/* Where the directory held as fd is now (its path, moved aside), for the log; "" when it was
 * removed or cannot be told (no /proc). */
static void held_path(int fd, char *out, size_t size)
{
	char link[64];
	xsnprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, size - 1);
	out[n > 0 ? n : 0] = '\0';
	static const char deleted[] = " (deleted)";
	size_t len = (size_t)(n > 0 ? n : 0), dlen = sizeof(deleted) - 1;
	if (out[0] != '/' || (len >= dlen && !strcmp(out + len - dlen, deleted)))
		out[0] = '\0';
}

/* Opens d again by its name and swaps it in under its descriptor's number (dup3: never a
 * number closed while another thread may hold it). SAME once swapped; else the verdict on what
 * was opened (a file system or mount refused), look then describing it. */
static enum spool_dir_verdict reopen(struct spool *sp, enum spool_dir d, struct spool_dir_look *look)
{
	int fd = openat(sp->root_fd, dir_names[d], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		look->err = errno;
		return spool_dir_judge(&sp->opened[d], true, look, sp->root_opened.dev, sp->root_mount);
	}
	/* What was opened is judged, not what the name named a moment before. */
	look_at(fd, "", 0, look);
	enum spool_dir_verdict v = look->err ? SPOOL_DIR_UNREADABLE :
				   placement(look, sp->root_opened.dev, sp->root_mount);
	/* A directory a client made (after the one opened was removed) is not hers to steer. */
	enum dirtrust_verdict trust = dirtrust_judge(trust_kind(d), look->uid, look->mode,
						     (uint32_t)geteuid(), sp->own_uid);
	if (v == SPOOL_DIR_REPLACED && (trust == DIRTRUST_OWNER || trust == DIRTRUST_WRITABLE))
		v = SPOOL_DIR_UNTRUSTED;
	char old_path[PATH_MAX];
	if (v == SPOOL_DIR_REPLACED)
		held_path(sp->fd[d], old_path, sizeof(old_path));
	if (v == SPOOL_DIR_REPLACED && dup3(fd, sp->fd[d], O_CLOEXEC) < 0) {
		look->err = errno;
		v = SPOOL_DIR_UNREADABLE;
	}
	close(fd);
	if (v != SPOOL_DIR_REPLACED)
		return v;
	/* Before it is said: a pin taken after the log line is of the new one. */
	atomic_store_explicit(&sp->dir_gen[d], next_dir_gen(), memory_order_release);
	sp->opened[d] = look->id;
	/* Files left in the old one stay there: an operator moved them away with it. */
	if (old_path[0])
		log_warn("'%s/%s' was replaced while this daemon ran (moved aside and a new one "
			 "made): it uses the new one from now on; what is left in the old one, now "
			 "'%s', stays there, unseen by this daemon: move what should run or be "
			 "seen into '%s/%s' yourself, as files", sp->path, dir_names[d], old_path,
			 sp->path, dir_names[d]);
	else
		log_warn("'%s/%s' was replaced while this daemon ran (removed and made again): it "
			 "uses the new one from now on", sp->path, dir_names[d]);
	return SPOOL_DIR_SAME;
}

/* Says v of d once, and again when it changes (a refusal: when another directory is refused). */
static void say_dir(struct spool *sp, enum spool_dir d, enum spool_dir_verdict v,
		    const struct spool_dir_look *look)
{
	bool refused = v == SPOOL_DIR_OTHER_FS || v == SPOOL_DIR_OTHER_MOUNT ||
		       v == SPOOL_DIR_UNTRUSTED;
	if (v == sp->dir_said[d] && (!refused || same_dir(&sp->refused[d], &look->id)))
		return;
	sp->dir_said[d] = (uint8_t)v;
	if (refused)
		sp->refused[d] = look->id;
	const char *path = sp->path, *name = dir_names[d];
	switch (v) {
	case SPOOL_DIR_SAME:
		log_info("'%s/%s' is again the directory this daemon opened", path, name);
		break;
	case SPOOL_DIR_REPLACED:
		break;   /* said by reopen */
	case SPOOL_DIR_MISSING:
		log_warn("'%s/%s' is gone (removed or moved away): this daemon goes on with the "
			 "directory it opened, which no client sees, if it is anywhere still; make "
			 "'%s/%s' again to have it used (a restart makes it)", path, name, path, name);
		break;
	case SPOOL_DIR_NOT_DIR:
		log_warn("'%s/%s' is no longer a directory: this daemon goes on with the one it "
			 "opened, which no client sees, until a directory is there again", path, name);
		break;
	case SPOOL_DIR_UNREADABLE:
		log_warn("cannot look at '%s/%s': %s; this daemon goes on with the directory it "
			 "opened", path, name, strerror(look->err));
		break;
	case SPOOL_DIR_OTHER_FS:
	case SPOOL_DIR_OTHER_MOUNT:
		log_warn("'%s/%s' %s; not followed, this daemon goes on with the directory it "
			 "opened there", path, name, refused_why(v));
		break;
	case SPOOL_DIR_UNTRUSTED: {
		char why[320];
		uint32_t euid = (uint32_t)geteuid();
		dirtrust_explain(why, sizeof(why), dirtrust_judge(trust_kind(d), look->uid, look->mode,
								  euid, sp->own_uid),
				 look->uid, look->mode, euid);
		log_warn("'%s/%s' was replaced by a directory that %s; not followed, this daemon "
			 "goes on with the directory it opened there", path, name, why);
		break;
	}
	case SPOOL_DIR_OWN_REPLACED:
		log_warn("'%s/%s' was replaced while this daemon ran: not followed, since it holds "
			 "this daemon's own state (%s); it goes on with the one it opened until it is "
			 "restarted", path, name, d == SPOOL_RUNNING ? "its claimed jobs, leases, calls "
			 "in flight and staged results" : "its deliveries waiting to go out");
		break;
	}
}

/* running/ and outbox/ hold what this daemon is in the middle of (a claimed job's lease and
 * its saved responses, a delivery): following a new one would drop all of it, paid calls
 * included. Like the root, they are only said. */
static bool followed(enum spool_dir d)
{
	return d != SPOOL_RUNNING && d != SPOOL_OUTBOX;
}

unsigned spool_recheck_dirs(struct spool *sp)
{
	unsigned swapped = 0;
	spool_root_recheck(sp);
	for (int d = 0; d < SPOOL_NDIRS; d++) {
		if (sp->fd[d] < 0)
			continue;
		struct spool_dir_look look;
		look_at(sp->root_fd, dir_names[d], AT_SYMLINK_NOFOLLOW, &look);
		/* Without birth times (NFS, FUSE) an inode number used again would pass for the
		 * directory opened (ext4, and an NFS server on it, give a removed directory's number
		 * to the next one made): the one held must then still have a name. */
		bool alive = true;
		struct stat held;
		if (!look.err && (!look.id.btime_ns || !sp->opened[d].btime_ns) &&
		    same_dir(&sp->opened[d], &look.id))
			alive = fstat(sp->fd[d], &held) == 0 && held.st_nlink > 0;
		enum spool_dir_verdict v = spool_dir_judge(&sp->opened[d], alive, &look,
							   sp->root_opened.dev, sp->root_mount);
		if (v == SPOOL_DIR_REPLACED && !followed((enum spool_dir)d))
			v = SPOOL_DIR_OWN_REPLACED;
		if (v == SPOOL_DIR_REPLACED) {
			v = reopen(sp, (enum spool_dir)d, &look);
			if (v == SPOOL_DIR_SAME) {
				swapped |= SPOOL_BIT(d);
				sp->dir_said[d] = SPOOL_DIR_SAME;
				continue;
			}
		}
		say_dir(sp, (enum spool_dir)d, v, &look);
	}
	return swapped;
}

void spool_file_id(struct file_id *id, const struct stat *st)
{
	*id = (struct file_id){
		.dev = (uint64_t)st->st_dev, .ino = (uint64_t)st->st_ino, .size = (int64_t)st->st_size,
		.mtime_ns = timespec_ns(&st->st_mtim), .ctime_ns = timespec_ns(&st->st_ctim),
		.nlink = (uint32_t)st->st_nlink, .mode = (uint32_t)st->st_mode,
	};
}

static int entry_cmp(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

static long list(struct spool *sp, enum spool_dir d, bool hidden, struct spool_entry **out);

static int entry_stat_at(int dirfd, struct spool_entry *e)
{
	struct stat st;
	if (fstatat(dirfd, e->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	e->mtime_ns = timespec_ns(&st.st_mtim);
	spool_file_id(&e->id, &st);
	return 0;
}

long spool_list(struct spool *sp, enum spool_dir d, struct spool_entry **out)
{
	return list(sp, d, false, out);
}

long spool_list_hidden(struct spool *sp, enum spool_dir d, struct spool_entry **out)
{
	return list(sp, d, true, out);
}

DIR *spool_opendir(struct spool *sp, enum spool_dir d)
{
	int fd = openat(sp->fd[d], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		error("cannot open '%s/%s': %s", sp->path, dir_names[d], strerror(errno));
		return NULL;
	}
	DIR *dir = fdopendir(fd);
	if (!dir) {
		error("cannot read '%s/%s': %s", sp->path, dir_names[d], strerror(errno));
		close(fd);
	}
	return dir;
}

/* getdents64 straight into a buffer of our own: opendir's fstat and fcntls are three system
 * calls more per listing, and the gate lists calls/ for every call (spool-layout.md §17). */
#define LIST_BUF_BYTES 32768

long spool_list_at(int dirfd, bool hidden, bool stat_each, struct spool_entry **out)
{
	return spool_list_at_most(dirfd, hidden, stat_each, LONG_MAX, out);
}

long spool_list_at_most(int dirfd, bool hidden, bool stat_each, long max, struct spool_entry **out)
{
	*out = NULL;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct spool_entry *v = NULL;
	size_t n = 0, alloc = 0;
	_Alignas(struct dirent64) char buf[LIST_BUF_BYTES];
	ssize_t got;
	long names = 0;
	bool over = false;
	while (!over && (got = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < got && !over;) {
			const struct dirent64 *de = (const struct dirent64 *)(buf + off);
			off += de->d_reclen;
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			over = ++names > max;
			if (over || (de->d_name[0] == '.') != hidden)
				continue;
			if (n == alloc) {
				alloc = alloc ? alloc * 2 : 64;
				v = xrealloc(v, alloc * sizeof(*v));
			}
			v[n] = (struct spool_entry){ .name = xstrdup(de->d_name), .id = { .ino = de->d_ino,
				.mode = de->d_type == DT_UNKNOWN ? 0 : DTTOIF(de->d_type) } };
			/* A name that vanished between the listing and stat was taken by someone else. */
			if (stat_each && entry_stat_at(dirfd, &v[n]) < 0) {
				free(v[n].name);
				continue;
			}
			n++;
		}
	}
	if (over) {
		got = -1;
		errno = E2BIG;
	}
	int saved = errno;
	close(fd);
	if (got < 0) {
		spool_entries_free(v, (long)n);
		errno = saved;
		return -1;
	}
	if (n && stat_each)
		qsort(v, n, sizeof(*v), entry_cmp);
	*out = v;
	return (long)n;
}

/* A listing of one of the spool's directories; a failure is logged. */
static long list_dir(struct spool *sp, enum spool_dir d, bool hidden, bool stat_each,
		     struct spool_entry **out)
{
	long n = spool_list_at(sp->fd[d], hidden, stat_each, out);
	if (n < 0)
		error("cannot read '%s/%s': %s", sp->path, dir_names[d], strerror(errno));
	return n;
}

static long list(struct spool *sp, enum spool_dir d, bool hidden, struct spool_entry **out)
{
	return list_dir(sp, d, hidden, true, out);
}

long spool_list_names(struct spool *sp, enum spool_dir d, bool hidden, struct spool_entry **out)
{
	return list_dir(sp, d, hidden, false, out);
}

int spool_entry_stat(struct spool *sp, enum spool_dir d, struct spool_entry *e)
{
	return entry_stat_at(sp->fd[d], e);
}

void spool_entries_free(struct spool_entry *e, long n)
{
	for (long i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

static enum spool_read read_checked(int fd, size_t max, size_t head, nlink_t max_links,
				    struct buf *out, struct stat *st, int *keep_fd);
static enum spool_read read_named(int dirfd, const char *name, size_t max, size_t head,
				  nlink_t max_links, struct buf *out, struct stat *st, int *keep_fd);

enum spool_read spool_read_file(int dirfd, const char *name, size_t max, struct buf *out,
				struct stat *st)
{
	return spool_read_linked(dirfd, name, max, 1, out, st);
}

enum spool_read spool_read_keep(int dirfd, const char *name, size_t max, struct buf *out,
				struct stat *st, int *fd_out)
{
	*fd_out = -1;
	return read_named(dirfd, name, max, SIZE_MAX, 1, out, st, fd_out);
}

enum spool_read spool_read_head(int dirfd, const char *name, size_t max, size_t head,
				struct buf *out, struct stat *st)
{
	return read_named(dirfd, name, max, head, 1, out, st, NULL);
}

enum spool_read spool_read_linked(int dirfd, const char *name, size_t max, nlink_t max_links,
				  struct buf *out, struct stat *st)
{
	return read_named(dirfd, name, max, SIZE_MAX, max_links, out, st, NULL);
}

static enum spool_read read_named(int dirfd, const char *name, size_t max, size_t head,
				  nlink_t max_links, struct buf *out, struct stat *st, int *keep_fd)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		st->st_mode = 0;   /* not opened: nothing is known of it */
		/* ESTALE: another NFS client moved it away under us; the same as gone. */
		if (errno == ENOENT || errno == ESTALE)
			return SPOOL_READ_GONE;
		if (errno == ELOOP)
			return SPOOL_READ_NOT_REGULAR;
		return SPOOL_READ_ERROR;
	}
	return read_checked(fd, max, head, max_links, out, st, keep_fd);
}

/* Consumes fd, or hands it to *keep_fd when the read is OK and keep_fd is given. Reads the
 * whole file, or its first head bytes (at least; a chunk at most more). */
static enum spool_read read_checked(int fd, size_t max, size_t head, nlink_t max_links,
				    struct buf *out, struct stat *st, int *keep_fd)
{
	if (fd < 0)
		return SPOOL_READ_ERROR;
	enum spool_read rc = SPOOL_READ_OK;
	if (fstat(fd, st) < 0) {
		rc = SPOOL_READ_ERROR;
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		rc = SPOOL_READ_NOT_REGULAR;
		goto out;
	}
	if (st->st_nlink < 1 || st->st_nlink > max_links) {
		rc = SPOOL_READ_LINKED;
		goto out;
	}
	if ((uint64_t)st->st_size > max) {
		rc = SPOOL_READ_TOO_BIG;
		goto out;
	}
	buf_reset(out);
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = SPOOL_READ_ERROR;
			break;
		}
		if (n == 0)
			break;
		/* The file may grow after fstat: the cap holds for what we read, too. */
		if (buf_append(out, chunk, (size_t)n) < 0) {
			rc = SPOOL_READ_TOO_BIG;
			break;
		}
		/* A short read of a regular file is its end: with all fstat saw, no read of 0 is
		 * needed to tell (one system call less per job claimed). */
		if (((size_t)n < sizeof(chunk) && out->len == (size_t)st->st_size) || out->len >= head)
			break;
	}
out:
	if (keep_fd && rc == SPOOL_READ_OK) {
		*keep_fd = fd;
		return rc;
	}
	{
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return rc;
}

const char *spool_read_reason(enum spool_read r)
{
	switch (r) {
	case SPOOL_READ_OK:
		return "ok";
	case SPOOL_READ_GONE:
		return "the file disappeared";
	case SPOOL_READ_NOT_REGULAR:
		return "not a regular file (a symlink, FIFO, socket, device or directory)";
	case SPOOL_READ_LINKED:
		return "the file has more than one hard link";
	case SPOOL_READ_TOO_BIG:
		return "the file is larger than [limits] max_job_bytes";
	case SPOOL_READ_ERROR:
		return "the file could not be read";
	}
	return "?";
}

bool spool_written_by_daemon(const struct spool *sp, const struct stat *st)
{
	return dirtrust_owner_ok((uint32_t)st->st_uid, (uint32_t)geteuid(), sp->own_uid);
}

bool spool_dir_trusted(const struct spool *sp, int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 &&
	       dirtrust_judge(DIRTRUST_TRUSTED, (uint32_t)st.st_uid, (uint32_t)st.st_mode,
			      (uint32_t)geteuid(), sp->own_uid) == DIRTRUST_OK;
}

int spool_shared_dir_make(struct spool *sp, const char *name)
{
	struct stat st;
	for (int tries = 0; tries < 3; tries++) {
		if (mkdirat(sp->root_fd, name, 0777) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
		if (fstatat(sp->root_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;   /* gone meanwhile: made again */
			return -1;
		}
		if (spool_written_by_daemon(sp, &st))
			return 0;   /* the daemon's: judged by its mode where it is opened */
		char aside[NAME_MAX + 1];
		xsnprintf(aside, sizeof(aside), "%s.untrusted.%" PRId64 ".%04x", name, wall_ms(),
			  (unsigned)(random64() & 0xffff));
		if (renameat(sp->root_fd, name, sp->root_fd, aside) < 0) {
			log_warn("'%s/%s' is owned by uid %u, not by the daemon's user (uid %u) or root, "
				 "and cannot be moved aside (%s): it is not used; remove it",
				 sp->path, name, (unsigned)st.st_uid, (unsigned)geteuid(),
				 strerror(errno));
			errno = EPERM;
			return -1;
		}
		log_warn("'%s/%s' was owned by uid %u, not by the daemon's user (uid %u) or root (a "
			 "client may make a name the spool's root lacks): moved aside as '%s' for an "
			 "operator to look at, and made anew (spool-layout.md §12)", sp->path, name,
			 (unsigned)st.st_uid, (unsigned)geteuid(), aside);
	}
	errno = EPERM;
	return -1;
}

bool spool_exists(int dirfd, const char *name)
{
	struct stat st;
	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* NFS may lose the reply to a rename that succeeded, and the retransmission then fails: it
 * succeeded if the source is gone and the target there. 0, or -1 with the rename's errno. */
static int lost_reply(int fromfd, const char *from_name, int tofd, const char *to_name)
{
	int saved = errno;
	if (!spool_exists(fromfd, from_name) && spool_exists(tofd, to_name))
		return 0;
	errno = saved;
	return -1;
}

static int rename_between(int fromfd, const char *from_name, int tofd, const char *to_name)
{
	if (renameat(fromfd, from_name, tofd, to_name) == 0)
		return 0;
	return lost_reply(fromfd, from_name, tofd, to_name);
}

int spool_rename(struct spool *sp, enum spool_dir from, const char *from_name, enum spool_dir to,
		 const char *to_name)
{
	return rename_between(sp->fd[from], from_name, sp->fd[to], to_name);
}

/* A thread's pinned descriptor of each directory, kept from pin to pin: which spool and which
 * of its directories (dir_gen; 0: none), and how many pins of it are under way. */
struct pin {
	const struct spool *sp;
	uint64_t gen;
	int fd;
	unsigned depth;
};
static _Thread_local struct pin pins[SPOOL_NDIRS];

/* A thread that ends closes what it kept (a key's destructor runs at its exit). */
static pthread_key_t pins_key;
static pthread_once_t pins_key_once = PTHREAD_ONCE_INIT;

static void pins_at_exit(void *unused)
{
	(void)unused;
	unpin_spool(NULL);
}

static void pins_key_make(void)
{
	pthread_key_create(&pins_key, pins_at_exit);
}

static void pins_kept(void)
{
	pthread_once(&pins_key_once, pins_key_make);
	pthread_setspecific(pins_key, pins);
}

int spool_pin(struct spool *sp, enum spool_dir d)
{
	struct pin *p = &pins[d];
	if (p->depth && p->sp == sp)
		return p->depth++, p->fd;
	/* Read before the dup: a swap in between leaves a newer directory under an older number,
	 * pinned again at the next pin, never an older directory under the newer number. */
	uint64_t gen = atomic_load_explicit(&sp->dir_gen[d], memory_order_acquire);
	if (!p->depth && p->gen && p->gen == gen)
		return p->depth = 1, p->fd;
	int fd = fcntl(sp->fd[d], F_DUPFD_CLOEXEC, 0);
	if (fd < 0 || p->depth || !gen)
		return fd;   /* another spool's pin is under way: this one is not kept */
	if (p->gen)
		close(p->fd);   /* the directory that was replaced, or another spool's */
	else
		pins_kept();
	*p = (struct pin){ .sp = sp, .gen = gen, .fd = fd, .depth = 1 };
	return fd;
}

void spool_unpin(struct spool *sp, enum spool_dir d, int fd)
{
	struct pin *p = &pins[d];
	if (p->depth && p->sp == sp && p->fd == fd) {
		p->depth--;
		return;
	}
	int saved = errno;
	close(fd);
	errno = saved;
}

/* The calling thread's kept pins of sp, if no pin of them is under way. */
static void unpin_spool(const struct spool *sp)
{
	for (int d = 0; d < SPOOL_NDIRS; d++) {
		struct pin *p = &pins[d];
		if (p->gen && !p->depth && (!sp || p->sp == sp)) {
			close(p->fd);
			*p = (struct pin){ 0 };
		}
	}
}


/* renameat2 with RENAME_NOREPLACE: 0, -1 with errno, or 1 where the file system lacks it (some
 * NFS and FUSE; remembered). */
static int renameat_noreplace(struct spool *sp, int fromfd, const char *from_name, int tofd,
			      const char *to_name)
{
	if (atomic_load_explicit(&sp->no_noreplace, memory_order_relaxed))
		return 1;
	if (renameat2(fromfd, from_name, tofd, to_name, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	atomic_store_explicit(&sp->no_noreplace, true, memory_order_relaxed);
	return 1;
}

static int rename_noreplace(struct spool *sp, int fromfd, const char *from_name, int tofd,
			    const char *to_name)
{
	int rc = renameat_noreplace(sp, fromfd, from_name, tofd, to_name);
	if (rc <= 0)
		return rc;
	/* No RENAME_NOREPLACE here: link(2) never replaces either. */
	if (linkat(fromfd, from_name, tofd, to_name, 0) < 0) {
		if (errno != EPERM)
			return -1;
		/* sshfs says EPERM where others say EEXIST; a file system without hard links says
		 * it too: then a rename after a check that nothing has the name. */
		if (spool_exists(tofd, to_name)) {
			errno = EEXIST;
			return -1;
		}
		if (!spool_exists(fromfd, from_name)) {
			errno = ENOENT;
			return -1;
		}
		return rename_between(fromfd, from_name, tofd, to_name);
	}
	if (unlinkat(fromfd, from_name, 0) < 0) {
		int saved = errno;
		unlinkat(tofd, to_name, 0);   /* one name, not two links to one job */
		errno = saved;
		return -1;
	}
	return 0;
}

/* RENAME_NOREPLACE where the file system has it, else a plain rename: a link and an unlink
 * would cost every claim and deferral a call more. */
static int rename_noreplace_if_native(struct spool *sp, int fromfd, const char *from_name, int tofd,
				      const char *to_name)
{
	int rc = renameat_noreplace(sp, fromfd, from_name, tofd, to_name);
	/* EEXIST: the target was there before, so this rename did not happen, even should the
	 * source be gone by now (another host claimed it): never a lost reply. */
	if (rc < 0)
		return errno == EEXIST ? -1 : lost_reply(fromfd, from_name, tofd, to_name);
	return rc == 0 ? 0 : rename_between(fromfd, from_name, tofd, to_name);
}

int spool_rename_claim(struct spool *sp, enum spool_dir from, const char *from_name,
		       const char *running_name)
{
	return rename_noreplace_if_native(sp, sp->fd[from], from_name, sp->fd[SPOOL_RUNNING],
					  running_name);
}

int spool_rename_noreplace(struct spool *sp, enum spool_dir from, const char *from_name,
			   enum spool_dir to, const char *to_name)
{
	return rename_noreplace(sp, sp->fd[from], from_name, sp->fd[to], to_name);
}

int spool_sync_dir(struct spool *sp, enum spool_dir d)
{
	return fsync(sp->fd[d]);
}

/* Digits of a decimal or hex field in a temporary name. */
static bool all_hex(const char *from, const char *to)
{
	if (from == to)
		return false;
	for (const char *c = from; c < to; c++)
		if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
			return false;
	return true;
}

static _Atomic long temp_pid;        /* getpid(), asked once (and again in a forked child) */
static _Atomic unsigned temp_seq;    /* the names' numbers: a random start, then counting */

static void temp_forked(void)
{
	atomic_store(&temp_pid, (long)getpid());
}

static void temp_init(void)
{
	unsigned seed = 0;
	(void)!getrandom(&seed, sizeof(seed), GRND_NONBLOCK);
	atomic_store(&temp_seq, seed);
	atomic_store(&temp_pid, (long)getpid());
	pthread_atfork(NULL, NULL, temp_forked);
}

long spool_temp_unique(unsigned *seq)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, temp_init);
	*seq = atomic_fetch_add(&temp_seq, 1);
	return atomic_load(&temp_pid);
}

int spool_temp_name(char *out, size_t size, const char *name, const char *host, long pid,
		    unsigned rnd)
{
	char part[96];
	/* 128-char id + 64-char host id: "ID@HOST.json" leaves no room for the rest under
	 * NAME_MAX, so a long name is cut and told apart by a hash of the whole of it. */
	if (strlen(name) > SPOOL_TEMP_NAME_PART)
		xsnprintf(part, sizeof(part), "%.64s~%016" PRIx64, name, str_hash(name));
	else
		xsnprintf(part, sizeof(part), "%s", name);
	if (xsnprintf(out, size, ".%s.%s.%ld.%08x.tmp", part, host, pid, rnd) < 0 ||
	    strlen(out) > NAME_MAX) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

bool spool_is_our_temp(const char *name, const char *host)
{
	/* Read from the end, since NAME may itself contain another host's name. */
	size_t len = strlen(name), hlen = strlen(host);
	if (len < 4 || strcmp(name + len - 4, ".tmp"))
		return false;
	const char *p = name + len - 4;          /* at ".tmp" */
	for (int field = 0; field < 2; field++) { /* RANDOM, then PID */
		const char *q = p;
		while (q > name && q[-1] != '.')
			q--;
		if (q == name || !all_hex(q, p))
			return false;
		p = q - 1;                        /* at the '.' before the field */
	}
	return (size_t)(p - name) > hlen && p[-(long)hlen - 1] == '.' &&
	       !strncmp(p - hlen, host, hlen);
}

/* A rewrite slower than this stamps its file anew before the exchange: far below a heartbeat
 * interval (lease_timeout / 4, at least 500 ms), so a faster one keeps a fresh enough mtime. */
#define REWRITE_STALE_MS 100

/* How write_at puts a file into place. */
struct write_how {
	bool replace_only;       /* only over an existing name (never recreate a job taken away) */
	bool fsync_file;         /* before its rename (when no ss) */
	struct syncset *ss;      /* a batch's: fsynced file by file or by its barrier */
	int64_t mtime_ms;        /* > 0: the file's mtime, set before its rename */
	bool fsync_dir;          /* after its rename */
	bool bytes_first;        /* with ss: its bytes synced before its rename (syncset_bytes) */
};

/* Writes data to a new file dirfd/name (O_EXCL, never through a link): fsynced by ss, or when
 * fsync; restamp: stamped anew when writing it took long (a job file's lease). Removed when
 * that fails. */
static int write_new(int dirfd, const char *name, const void *data, size_t len, bool fsync_file,
		     struct syncset *ss, bool restamp, bool bytes_first)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return -1;
	int64_t started = mono_ms();
	if (write_all(fd, data, len) < 0 || (ss ? (bytes_first ? syncset_bytes : syncset_file)(ss, fd)
	     : fsync_file ? fsync(fd) : 0) < 0)
		goto fail;
	/* A job file's mtime is its lease: the new content must not bring back the time it was
	 * written at, before an fsync that may have taken longer than the lease. */
	if (restamp && mono_ms() - started >= REWRITE_STALE_MS && futimens(fd, NULL) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	{
		int saved = errno;
		if (fd >= 0)
			close(fd);
		unlinkat(dirfd, name, 0);
		errno = saved;
	}
	return -1;
}

/* Writes data to a new temporary file for name in dirfd (its name goes to tmp), as write_new. */
static int write_temp(struct spool *sp, int dirfd, const char *name, const void *data,
		      size_t len, bool fsync_file, struct syncset *ss, bool restamp, char *tmp,
		      bool bytes_first)
{
	unsigned seq = 0;
	long pid = spool_temp_unique(&seq);
	/* The host id in the name lets a restart remove its own leftovers and nobody else's. */
	if (spool_temp_name(tmp, NAME_MAX + 1, name, sp->host_id, pid, seq) < 0)
		return -1;
	return write_new(dirfd, tmp, data, len, fsync_file, ss, restamp, bytes_first);
}

int spool_write_aside(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		      size_t len)
{
	int dirfd = sp->fd[d];
	int rc = write_new(dirfd, name, data, len, true, NULL, true, false);
	/* A leftover of ours (the name is the caller's alone): replaced. sshfs says EPERM where
	 * others say EEXIST; the unlink tells whether something was there. */
	if (rc < 0 && (errno == EEXIST || errno == EPERM) && unlinkat(dirfd, name, 0) == 0)
		rc = write_new(dirfd, name, data, len, true, NULL, true, false);
	if (rc == 0 && fsync(dirfd) < 0) {
		int saved = errno;
		unlinkat(dirfd, name, 0);
		errno = saved;
		rc = -1;
	}
	return rc;
}

int spool_write_temp(struct spool *sp, int dirfd, const char *name, const void *data, size_t len,
		     char *tmp)
{
	return write_temp(sp, dirfd, name, data, len, true, NULL, false, tmp, false);
}

/* Puts dirfd/tmp, a temporary file of ours, in place at name, as how says (how->ss: not used,
 * its caller names the directory); removes it when that fails. */
static int put_in_place(struct spool *sp, int dirfd, const char *tmp, const char *name,
			const struct write_how *how)
{
	if (how->mtime_ms > 0) {
		struct timespec times[2] = {
			{ .tv_nsec = UTIME_NOW },
			{ .tv_sec = how->mtime_ms / 1000, .tv_nsec = how->mtime_ms % 1000 * 1000000 },
		};
		if (utimensat(dirfd, tmp, times, AT_SYMLINK_NOFOLLOW) < 0)
			goto fail;
	}
	if (how->replace_only) {
		/* An exchange fails when name is gone (another daemon took the job): never recreate
		 * it. File systems without RENAME_EXCHANGE (NFS) check first, leaving a short window. */
		if (!atomic_load_explicit(&sp->no_exchange, memory_order_relaxed)) {
			if (renameat2(dirfd, tmp, dirfd, name, RENAME_EXCHANGE) == 0) {
				unlinkat(dirfd, tmp, 0);   /* now the old content */
				return 0;
			}
			if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
				goto fail;
			atomic_store_explicit(&sp->no_exchange, true, memory_order_relaxed);
		}
		if (!spool_exists(dirfd, name)) {
			errno = ENOENT;
			goto fail;
		}
	}
	/* rename replaces a planted symlink at name instead of writing through it. */
	if (renameat(dirfd, tmp, dirfd, name) < 0)
		goto fail;
	return how->fsync_dir ? fsync(dirfd) : 0;
fail:
	{
		int saved = errno;
		unlinkat(dirfd, tmp, 0);
		errno = saved;
	}
	return -1;
}

/* Writes data to dirfd/name through a temporary file, as how says. */
static int write_at(struct spool *sp, int dirfd, const char *name, const void *data, size_t len,
		    const struct write_how *how)
{
	char tmp[NAME_MAX + 1];
	if (write_temp(sp, dirfd, name, data, len, how->fsync_file, how->ss, how->replace_only,
		       tmp, how->bytes_first) < 0)
		return -1;
	return put_in_place(sp, dirfd, tmp, name, how);
}

int spool_write_at(struct spool *sp, int dirfd, const char *name, const void *data, size_t len,
		   int64_t mtime_ms, bool durable)
{
	struct write_how how = { .fsync_file = durable, .mtime_ms = mtime_ms, .fsync_dir = durable };
	return write_at(sp, dirfd, name, data, len, &how);
}

int spool_write_file(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		     size_t len)
{
	/* Its temporary file, its rename and the directory's fsync in the same directory,
	 * whichever a rescan swaps in meanwhile; running/ and outbox/ (a job's records, a
	 * delivery's) are never swapped, and their callers sync them when they need to. */
	if (!followed(d))
		return write_at(sp, sp->fd[d], name, data, len, &(struct write_how){ .fsync_file = true });
	int dirfd = spool_pin(sp, d);
	if (dirfd < 0)
		return -1;
	char tmp[NAME_MAX + 1];
	int rc = write_temp(sp, dirfd, name, data, len, true, NULL, false, tmp, false);
	if (rc == 0) {
		stop_point("write:pinned");   /* a test replaces the directory here */
		rc = put_in_place(sp, dirfd, tmp, name, &(struct write_how){ .fsync_dir = true });
	}
	spool_unpin(sp, d, dirfd);
	return rc;
}

int spool_rewrite_file(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		       size_t len)
{
	struct write_how how = { .fsync_file = true, .replace_only = true };
	return write_at(sp, sp->fd[d], name, data, len, &how);
}

int spool_write_staged(struct spool *sp, int dirfd, const char *name, const void *data,
		       size_t len, struct syncset *ss, bool in_place)
{
	if (!in_place)
		return spool_write_final_in(sp, dirfd, name, data, len, ss);
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return errno == EEXIST ? spool_write_final_in(sp, dirfd, name, data, len, ss) : -1;
	if (write_all(fd, data, len) < 0 || syncset_file(ss, fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	syncset_dir(ss, dirfd);
	return 0;
fail:
	{
		int saved = errno;
		if (fd >= 0)
			close(fd);
		unlinkat(dirfd, name, 0);   /* ours: just made */
		errno = saved;
	}
	return -1;
}

int spool_write_final_in(struct spool *sp, int dirfd, const char *name, const void *data,
			 size_t len, struct syncset *ss)
{
	if (write_at(sp, dirfd, name, data, len, &(struct write_how){ .ss = ss,
		     .bytes_first = true }) < 0)
		return -1;
	syncset_dir(ss, dirfd);
	return 0;
}

int spool_rewrite_in(struct spool *sp, enum spool_dir d, const char *name, const void *data,
		     size_t len, struct syncset *ss)
{
	if (write_at(sp, sp->fd[d], name, data, len, &(struct write_how){ .ss = ss,
		     .replace_only = true }) < 0)
		return -1;
	syncset_dir(ss, sp->fd[d]);
	return 0;
}

int spool_write_temp_in(struct spool *sp, enum spool_dir d, const char *name, const void *data,
			size_t len, struct syncset *ss, char *tmp, int64_t *written_ms)
{
	if (write_temp(sp, sp->fd[d], name, data, len, false, ss, true, tmp, false) < 0)
		return -1;
	*written_ms = mono_ms();
	return 0;
}

int spool_replace_in(struct spool *sp, enum spool_dir d, const char *tmp, const char *name,
		     int64_t written_ms, struct syncset *ss)
{
	int dirfd = sp->fd[d];
	/* Written before a barrier: the lease (its mtime) must not go back to then. */
	if (mono_ms() - written_ms >= REWRITE_STALE_MS &&
	    utimensat(dirfd, tmp, NULL, AT_SYMLINK_NOFOLLOW) < 0) {
		int saved = errno;
		unlinkat(dirfd, tmp, 0);
		errno = saved;
		return -1;
	}
	if (put_in_place(sp, dirfd, tmp, name, &(struct write_how){ .replace_only = true }) < 0)
		return -1;
	syncset_dir(ss, dirfd);
	return 0;
}

void spool_syncset(struct spool *sp, struct syncset *ss, size_t n_jobs)
{
	syncset_init(ss, sp->root_fd, sync_whole_fs(sp->sync_mode, sp->fs_type, n_jobs));
	ss->names_in_order = sync_names_in_order(sp->sync_mode, sp->fs_type,
						 sp->journal_kind != SPOOL_JOURNAL_NONE);
}

/* Whether options (as /proc/fs/ext4/NAME/options lists them: one a line, or comma-separated)
 * holds the option word, whole. */
static bool has_option(const char *options, const char *word)
{
	size_t len = strlen(word);
	for (const char *p = options; *p; ) {
		size_t n = strcspn(p, ",\n \t");
		if (n == len && !strncmp(p, word, len))
			return true;
		p += n;
		p += *p != '\0';
	}
	return false;
}

enum spool_journal spool_journal_decide(const char *journal_task, const char *options,
					dev_t root_dev, const dev_t *dir_devs, size_t n_dirs)
{
	if (!journal_task || !options || !*journal_task || !strncmp(journal_task, "<none>", 6))
		return SPOOL_JOURNAL_NONE;
	/* The journal's order is worth something only for names on the one file system read. */
	for (size_t i = 0; i < n_dirs; i++)
		if (dir_devs[i] != root_dev)
			return SPOOL_JOURNAL_NONE;
	/* jbd2 then writes the commit block without flushing the disk's cache before it: after a
	 * power cut a committed rename may name blocks that never reached the disk. */
	if (has_option(options, "journal_async_commit"))
		return SPOOL_JOURNAL_NONE;
	/* No cache flush at all: no sync is durable across a power cut, whichever sequence. */
	if (has_option(options, "nobarrier") || has_option(options, "barrier=0"))
		return SPOOL_JOURNAL_NO_BARRIER;
	return SPOOL_JOURNAL_ORDERED;
}

/* Reads a small text file whole into buf: false if it cannot. */
static bool read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t got = read(fd, buf, size - 1);
	close(fd);
	if (got <= 0)
		return false;
	buf[got] = '\0';
	return true;
}

enum spool_journal spool_fs_journal(int root_fd, const int *dir_fds, size_t n_dirs)
{
	struct stat st;
	char link[PATH_MAX], path[PATH_MAX + 64], task[32], options[4096];
	dev_t devs[SPOOL_NDIRS];
	if (fstat(root_fd, &st) < 0 || n_dirs > SPOOL_NDIRS)
		return SPOOL_JOURNAL_NONE;
	for (size_t i = 0; i < n_dirs; i++) {
		struct stat dst;
		if (fstat(dir_fds[i], &dst) < 0)
			return SPOOL_JOURNAL_NONE;
		devs[i] = dst.st_dev;
	}
	/* /sys/fs/ext4/ and /proc/fs/ext4/ name each file system by its device's name (loop0,
	 * sda1, dm-0), the name /sys/dev/block/MAJOR:MINOR links to. */
	xsnprintf(path, sizeof(path), "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return SPOOL_JOURNAL_NONE;
	link[n] = '\0';
	const char *dev = strrchr(link, '/');
	dev = dev ? dev + 1 : link;
	xsnprintf(path, sizeof(path), "/sys/fs/ext4/%s/journal_task", dev);
	if (!read_text(path, task, sizeof(task)))
		return SPOOL_JOURNAL_NONE;
	xsnprintf(path, sizeof(path), "/proc/fs/ext4/%s/options", dev);
	if (!read_text(path, options, sizeof(options)))
		return SPOOL_JOURNAL_NONE;
	return spool_journal_decide(task, options, st.st_dev, devs, n_dirs);
}

/* The probe has a private name (O_EXCL, random, in running/ where only daemons write): a FIFO
 * or symlink planted at a fixed name could block or mislead it. */
static int probe_server_clock(struct spool *sp, int64_t *server_ms)
{
	char name[NAME_MAX + 1];
	struct stat st;
	unsigned rnd = 0;
	long pid = spool_temp_unique(&rnd);
	if (spool_temp_name(name, sizeof(name), "clock", sp->host_id, pid, rnd) < 0)
		return -1;
	int dirfd = sp->fd[SPOOL_RUNNING];
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
			0600);
	if (fd < 0)
		return -1;
	/* A write makes the server stamp the file with its own time. */
	int rc = write_all(fd, "t", 1);
	if (close(fd) < 0)
		rc = -1;
	if (rc == 0 && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		rc = -1;
	int saved = errno;
	unlinkat(dirfd, name, 0);
	errno = saved;
	if (rc == 0)
		*server_ms = timespec_ms(&st.st_mtim);
	return rc;
}

#define CLOCK_PROBE_EVERY_MS 10000   /* clocks drift by ppm: the offset keeps that long */

int64_t spool_server_now(struct spool *sp)
{
	int64_t mono = mono_ms();
	if (!sp->clock_probed_mono || mono - sp->clock_probed_mono >= CLOCK_PROBE_EVERY_MS) {
		int64_t before = wall_ms(), server;
		sp->clock_probed_mono = mono;
		if (probe_server_clock(sp, &server) == 0) {
			if (sp->clock_failing)
				log_info("the file server's clock can be read again");
			sp->clock_failing = false;
			sp->clock_offset_ms = server - before;
		} else if (!sp->clock_failing) {
			/* Not fatal, and not silent: leases and due times are then judged by the
			 * last offset measured (the local clock if none was). */
			sp->clock_failing = true;
			log_warn("cannot read the file server's clock (a probe file in '%s/running': %s): "
				 "judging file times by the local clock%s", sp->path, strerror(errno),
				 sp->clock_offset_ms ? " and the last offset measured" : "");
		}
	}
	return wall_ms() + sp->clock_offset_ms;
}

long spool_free_mb(struct spool *sp)
{
	struct statvfs vfs;
	if (fstatvfs(sp->root_fd, &vfs) < 0)
		return -1;
	if (vfs.f_files > 0 && vfs.f_favail < 64)
		return 0;
	return (long)((uint64_t)vfs.f_bavail * vfs.f_frsize >> 20);
}

bool spool_still_ours(struct spool *sp, const char *running_name)
{
	return spool_exists(sp->fd[SPOOL_RUNNING], running_name);
}

int spool_move_rewritten(struct spool *sp, const char *running_name, enum spool_dir dest,
			 const char *dest_name, const void *data, size_t len, int64_t mtime_ms,
			 enum spool_replace how)
{
	/* Never recreate a job another host has reclaimed from us. */
	if (!spool_still_ours(sp, running_name)) {
		errno = ENOENT;
		return -1;
	}
	if (spool_write_file(sp, SPOOL_RUNNING, running_name, data, len) < 0)
		return -1;
	crash_point("move:rewritten");
	struct timespec times[2] = {
		{ .tv_nsec = UTIME_NOW },
		{ .tv_sec = mtime_ms / 1000, .tv_nsec = (mtime_ms % 1000) * 1000000 },
	};
	if (utimensat(sp->fd[SPOOL_RUNNING], running_name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	crash_point("move:timed");
	/* The directory it moved into is the one synced, whichever a rescan swaps in meanwhile. */
	int destfd = spool_pin(sp, dest);
	if (destfd < 0)
		return -1;
	stop_point("move:pinned");   /* a test replaces dest here */
	int rc = how == SPOOL_NEVER_REPLACE
		 ? rename_noreplace(sp, sp->fd[SPOOL_RUNNING], running_name, destfd, dest_name)
		 : rename_noreplace_if_native(sp, sp->fd[SPOOL_RUNNING], running_name, destfd,
					      dest_name);
	if (rc == 0)
		crash_point("move:moved");
	if (rc == 0 && (fsync(destfd) < 0 || spool_sync_dir(sp, SPOOL_RUNNING) < 0))
		rc = -1;
	spool_unpin(sp, dest, destfd);
	return rc;
}

char *spool_running_name(const struct spool *sp, const char *id)
{
	return xasprintf("%s@%s.json", id, sp->host_id);
}

bool spool_split_at(const char *name, size_t start, size_t end, const char **at)
{
	*at = end > start ? memchr(name + start, '@', end - start) : NULL;
	return *at && *at > name + start && *at + 1 < name + end &&
	       !memchr(*at + 1, '@', (size_t)(name + end - *at - 1));
}

bool spool_running_id(const char *name, char *id, size_t id_size, char *host, size_t host_size)
{
	const char *at;
	size_t len = strlen(name);
	if (name[0] == '.' || len < 5 || strcmp(name + len - 5, ".json") ||
	    !spool_split_at(name, 0, len - 5, &at))
		return false;
	size_t id_len = (size_t)(at - name), host_len = len - 5 - id_len - 1;
	if ((id && id_len >= id_size) || (host && host_len >= host_size))
		return false;
	if (id)
		xsnprintf(id, id_size, "%.*s", (int)id_len, name);
	if (host)
		xsnprintf(host, host_size, "%.*s", (int)host_len, at + 1);
	return true;
}
