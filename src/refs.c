/* refs.c - a job's reference images, found as its submitter could find them (refs.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "refs.h"
#include "spool.h"
#include "util.h"
#include "banned.h"

bool refs_may(const struct refs_owner *owner, uint32_t uid, uint32_t gid, uint32_t mode,
	      uint32_t want)
{
	if (owner->trusted)
		return true;
	/* The kernel looks at one class only: the owner's bits for the owner, even when the
	 * group's or others' would allow more. */
	if (owner->uid == uid)
		return mode & (want << 6);
	if (owner->gid == gid)
		return mode & (want << 3);
	return mode & want;
}

const char *refs_path_problem(const char *path)
{
	while (path[0] == '.' && path[1] == '/')
		path += 2;
	size_t len = strcspn(path, "/");
	for (int d = 0; d < SPOOL_NDIRS; d++) {
		const char *name = spool_dir_name((enum spool_dir)d);
		if (strlen(name) == len && !memcmp(path, name, len))
			return "it is in a state directory";
	}
	/* keyshare's: the daemon's own, like the state directories. */
	if ((len == 6 && !memcmp(path, "ledger", 6)) || (len == 9 && !memcmp(path, "providers", 9)))
		return "it is in a directory the daemon keeps for itself";
	return NULL;
}

int refs_open(int root_fd, const char *path, const struct refs_owner *owner, size_t max,
	      struct stat *st, char *why, size_t why_size)
{
	const char *problem = refs_path_problem(path);
	if (problem) {
		xsnprintf(why, why_size, "%s", problem);
		return -1;
	}
	char part[NAME_MAX + 1];
	int dirfd = root_fd, fd = -1;
	for (const char *p = path;;) {
		size_t len = strcspn(p, "/");
		bool last = !p[len];
		if (len > NAME_MAX) {
			xsnprintf(why, why_size, "a part of it is longer than %d bytes", NAME_MAX);
			break;
		}
		memcpy(part, p, len);
		part[len] = '\0';
		/* One part at a time, so that each directory is judged as she would pass it. */
		fd = openat(dirfd, part, last ? O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
					      : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			xsnprintf(why, why_size, "%s", errno == ENOENT ? "no such file" :
				  refs_errno_transient(errno) ? "out of file descriptors" :
				  errno == ELOOP || errno == ENOTDIR ? "it passes through a symlink or a file" :
				  strerror(errno));
			break;
		}
		if (fstat(fd, st) < 0) {
			xsnprintf(why, why_size, "%s", strerror(errno));
			break;
		}
		if (!last) {
			if (!S_ISDIR(st->st_mode)) {
				xsnprintf(why, why_size, "it passes through a symlink or a file");
				break;
			}
			if (!refs_may(owner, (uint32_t)st->st_uid, (uint32_t)st->st_gid,
				      (uint32_t)st->st_mode, S_IXOTH)) {
				xsnprintf(why, why_size, "its submitter (uid %u) may not enter '%.*s'",
					  owner->uid, (int)(p + len - path), path);
				break;
			}
			if (dirfd != root_fd)
				close(dirfd);
			dirfd = fd;
			fd = -1;
			p += len + 1;
			continue;
		}
		if (!S_ISREG(st->st_mode))
			xsnprintf(why, why_size, "not a regular file (a symlink, FIFO, socket, device or "
				  "directory)");
		else if (st->st_nlink != 1)
			xsnprintf(why, why_size, "the file has more than one hard link");
		else if ((uint64_t)st->st_size > max)
			xsnprintf(why, why_size, "it is larger than %zu MiB", max >> 20);
		else if (!refs_may(owner, (uint32_t)st->st_uid, (uint32_t)st->st_gid,
				   (uint32_t)st->st_mode, S_IROTH))
			xsnprintf(why, why_size, "its submitter (uid %u) may not read it (owner uid %u, "
				  "mode %04o)", owner->uid, (unsigned)st->st_uid,
				  (unsigned)(st->st_mode & 07777));
		else {
			if (dirfd != root_fd)
				close(dirfd);
			return fd;
		}
		break;
	}
	if (fd >= 0)
		close(fd);
	if (dirfd != root_fd)
		close(dirfd);
	return -1;
}

/* Reads len bytes of fd from its start into out: 0, or -1 with errno (EIO: it is shorter). */
static int read_whole(int fd, size_t len, struct buf *out)
{
	buf_reset(out);
	buf_reserve(out, len);
	while (out->len < len) {
		ssize_t n = pread(fd, out->data + out->len, len - out->len, (off_t)out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		out->len += (size_t)n;
	}
	return 0;
}

int refs_load(struct refs_loaded *out, int root_fd, const char *const *paths, int n,
	      const struct refs_owner *owner, size_t max_each, size_t max_total, bool read_bytes,
	      int *bad, char *why, size_t why_size)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i <= JOB_REFS_MAX; i++)
		buf_init(&out->bytes[i], max_each);
	int slot_of[JOB_REFS_MAX + 1];
	size_t len_of[JOB_REFS_MAX + 1];
	const char *mime_of[JOB_REFS_MAX + 1];
	for (int i = 0; i < n && i <= JOB_REFS_MAX; i++) {
		if (!paths[i])
			continue;
		*bad = i;
		/* The same path again (a job may name one image 16 times): the same file. */
		int slot = -1;
		for (int j = 0; j < i && slot < 0; j++)
			if (paths[j] && !strcmp(paths[j], paths[i]))
				slot = slot_of[j];
		struct stat st;
		if (slot < 0) {
			int fd = refs_open(root_fd, paths[i], owner, max_each, &st, why, why_size);
			if (fd < 0) {
				out->transient = refs_errno_transient(errno);
				return -1;
			}
			slot = out->n_fd++;
			out->fd[slot] = fd;
			unsigned char head[16];
			ssize_t got = pread(fd, head, sizeof(head), 0);
			if (got < 0 || !image_mime_from_magic(head, (size_t)got)) {
				xsnprintf(why, why_size, "%s", got < 0 ? strerror(errno) :
					  "it is not a PNG, JPEG or WebP image");
				return -1;
			}
			if (read_bytes && read_whole(fd, (size_t)st.st_size, &out->bytes[slot]) < 0) {
				xsnprintf(why, why_size, "the file could not be read: %s", strerror(errno));
				return -1;
			}
			len_of[slot] = (size_t)st.st_size;
			out->checked.n = out->n_fd;
			out->checked.path[slot] = i;
			out->checked.id[slot].dev = (uint64_t)st.st_dev;
			out->checked.id[slot].ino = (uint64_t)st.st_ino;
			out->checked.id[slot].size = (uint64_t)st.st_size;
			out->checked.id[slot].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
							 st.st_mtim.tv_nsec;
			mime_of[slot] = image_mime_from_magic(head, (size_t)got);
		}
		slot_of[i] = slot;
		/* Every mention: each is sent (and, inlined, encoded) again. */
		out->total += len_of[slot];
		if (out->total > max_total) {
			*bad = REFS_BAD_TOTAL;
			xsnprintf(why, why_size, "the reference images add up to more than %zu MiB",
				  max_total >> 20);
			return -1;
		}
		const char *base = strrchr(paths[i], '/');
		out->img[i] = (struct ref_image){
			.data = read_bytes ? (const unsigned char *)out->bytes[slot].data : NULL,
			.len = len_of[slot], .mime = mime_of[slot], .file = slot,
			.name = base ? base + 1 : paths[i],
		};
	}
	return 0;
}

void refs_loaded_release(struct refs_loaded *out)
{
	for (int i = 0; i < out->n_fd; i++)
		close(out->fd[i]);
	for (int i = 0; i <= JOB_REFS_MAX; i++)
		buf_release(&out->bytes[i]);
	out->n_fd = 0;
}

bool refs_errno_transient(int err)
{
	return err == EMFILE || err == ENFILE;
}

int refs_reopen(int root_fd, const char *const *paths, const struct refs_owner *owner,
		const struct refs_checked *checked, int *fds, bool *transient, char *why,
		size_t why_size)
{
	*transient = false;
	for (int i = 0; i < checked->n; i++) {
		struct stat st;
		const char *path = paths[checked->path[i]];
		errno = 0;
		fds[i] = refs_open(root_fd, path, owner, (size_t)checked->id[i].size, &st, why,
				   why_size);
		if (fds[i] >= 0 && ((uint64_t)st.st_dev != checked->id[i].dev ||
				    (uint64_t)st.st_ino != checked->id[i].ino ||
				    (uint64_t)st.st_size != checked->id[i].size ||
				    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec !=
				    checked->id[i].mtime_ns)) {
			close(fds[i]);
			fds[i] = -1;
			xsnprintf(why, why_size, "reference image \"%s\" changed (replaced or written) "
				  "since the job was claimed", path);
		} else if (fds[i] < 0) {
			*transient = refs_errno_transient(errno);
			char was[160];
			xsnprintf(was, sizeof(was), "%s", why);
			xsnprintf(why, why_size, "reference image \"%s\" cannot be used: %s", path, was);
		}
		if (fds[i] < 0) {
			while (i-- > 0)
				close(fds[i]);
			return -1;
		}
	}
	return 0;
}
