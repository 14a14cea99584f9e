/*
 * fleetq backup: a consistent hot copy of a fleetqd data directory (every
 * shard's LMDB environment and the account store) while the daemon runs.
 *
 * Who copies: this process, reading the data directory directly, not an
 * admin request to the daemon.  LMDB is built for it: fleetqd opens its
 * environments with a lock file (never MDB_NOLOCK), so another process can
 * open them read-only and mdb_env_copyfd2() copies one read snapshot while
 * the daemon keeps committing (writers are held only while the two meta
 * pages are read).  An admin op would not make backups remote in any
 * useful way: the files would still land on the daemon's host, written by
 * a daemon that systemd confines to its StateDirectory
 * (ProtectSystem=strict), and a copy of many GiB would occupy one of its
 * threads.  So: run it on the daemon's host, as the data directory's owner
 * (sudo -u fleetq fleetq backup ...).  docs/operations.md "Backup and
 * restore".
 *
 * The result is laid out as a data directory (SHARDS, shard-N/data.mdb,
 * accounts/data.mdb), so restoring is `fleetqd --data DIR`.  The manifest
 * (fleetq-backup.json) is written last, through a temporary file and a
 * rename: a directory without it is a partial backup.  token.key, which
 * decrypts the account store, is left out unless --include-token-key: a
 * backup without it exposes no token.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "fleetq/error.h"
#include "util.h"

#define BACKUP_MANIFEST "fleetq-backup.json"
#define BACKUP_FORMAT 1
#define BACKUP_MAX_SHARDS 64  /* fleetqd's --shards range */
#define BACKUP_PATH_MAX 4096

enum { B_HELP = 1000, B_VERSION, B_OUT, B_DATA, B_COMPACT, B_TOKEN_KEY, B_JSON };

static const fq_opt_t g_opts[] = {
    FQ_OPT_HELP(B_HELP),
    FQ_OPT_VERSION(B_VERSION),
    {"out", 0, "DIR", B_OUT, "where to write the backup: a new or empty directory,\n"
                              "not inside the data directory (required; created 0700)"},
    {"data", 0, "DIR", B_DATA, "fleetqd's data directory (default ./fleetq-data)"},
    {"compact", 0, NULL, B_COMPACT, "copy with MDB_CP_COMPACT: free pages left out and\n"
                                     "the tree renumbered (smaller, slower)"},
    {"include-token-key", 0, NULL, B_TOKEN_KEY,
     "copy token.key (the key of the account store) too;\n"
     "the backup then holds usable OAuth tokens"},
    {"json", 0, NULL, B_JSON, "print the manifest and warnings as one JSON object"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_doc = {
    .usage = "fleetq backup --out DIR [--data DIR] [--compact] [--include-token-key]\n"
             "                     [--json]",
    .about =
        "Copy every shard's store and the account store of a data directory into\n"
        "DIR while fleetqd runs (or not): each environment is one consistent LMDB\n"
        "snapshot, so every command acked before the backup started is in it.  DIR\n"
        "is laid out as a data directory: restoring is starting fleetqd with\n"
        "--data DIR (and the same --shards).  The manifest " BACKUP_MANIFEST " is\n"
        "written last: a DIR without it is an unfinished backup.  Run it on\n"
        "fleetqd's host as the owner of the data directory; it reads the files\n"
        "directly and does not talk to the daemon.\n",
    .notes = "Secrets: the account store holds OAuth tokens encrypted with\n"
             "<data>/token.key, which is not copied unless --include-token-key: keep\n"
             "a copy of it apart from the backups (restore: put it back as\n"
             "DIR/token.key, mode 0600, before starting fleetqd; without it the\n"
             "accounts must be added again).  The fleet key (--key), the clients file\n"
             "and the CURVE secret live outside the data directory: back them up\n"
             "yourself (docs/operations.md, \"Backup and restore\").  Anything else\n"
             "found in the data directory is named in a warning and not copied.\n",
    .exit = "0 the backup is complete, 1 it failed (no such data directory, not\n"
            "a data directory, DIR not empty or inside the data directory, a read\n"
            "or write error; an unfinished DIR has no manifest), 2 usage error.",
};

typedef struct bopts {
  const char *out, *data;
  bool compact, token_key, json;
} bopts_t;

static const char g_prog[] = "fleetq backup";

/* ---- small file helpers ---------------------------------------------------- */

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* Write len bytes to a new file path (0600, must not exist), fsync'd. */
static int write_new_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return -errno;
  const char *p = data;
  int rc = 0;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      break;
    }
    p += w;
    len -= (size_t)w;
  }
  if (rc == 0 && fsync(fd) != 0) rc = -errno;
  if (close(fd) != 0 && rc == 0) rc = -errno;
  return rc;
}

/* Read a small regular file (at most cap - 1 bytes) into buf, NUL-terminated.
 * Refuses symlinks.  Returns the length or -errno (-EFBIG when larger). */
static ssize_t read_small_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return -errno;
  size_t n = 0;
  ssize_t r = 0;
  while (n < cap && (r = read(fd, buf + n, cap - n)) > 0) n += (size_t)r;
  int e = r < 0 ? -errno : 0;
  close(fd);
  if (e) return e;
  if (n >= cap) return -EFBIG;
  buf[n] = 0;
  return (ssize_t)n;
}

/* Copy a plain file of the data directory (the budget counts) into out:
 * 0, 1 when the source is not there, or -errno. */
static int copy_plain(const char *data, const char *out, const char *name) {
  char src[BACKUP_PATH_MAX + 64], dst[BACKUP_PATH_MAX + 64];
  snprintf(src, sizeof src, "%s/%s", data, name);
  snprintf(dst, sizeof dst, "%s/%s", out, name);
  int fd = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return errno == ENOENT ? 1 : -errno;
  struct stat st;
  char *buf = NULL;
  size_t n = 0;
  int rc = 0;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
  } else if (!(buf = malloc((size_t)st.st_size + 1))) {
    rc = -ENOMEM;
  } else {
    /* Read what is there now; a file that grows meanwhile is cut at its
     * size when the copy began (the journal's torn last line is skipped
     * on start). */
    ssize_t r;
    while (n < (size_t)st.st_size && (r = read(fd, buf + n, (size_t)st.st_size - n)) != 0) {
      if (r < 0) {
        if (errno == EINTR) continue;
        rc = -errno;
        break;
      }
      n += (size_t)r;
    }
  }
  close(fd);
  if (!rc) rc = write_new_file(dst, buf ? buf : "", n);
  free(buf);
  return rc;
}

/* ---- the source ------------------------------------------------------------ */

/* The shard count in <data>/SHARDS (what fleetqd wrote), or 0 after
 * printing why the directory is not a data directory. */
static unsigned read_shards(const char *data, char *raw, size_t cap) {
  char path[BACKUP_PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/SHARDS", data);
  ssize_t n = read_small_file(path, raw, cap);
  if (n < 0) {
    if (n == -ENOENT)
      fq_opt_fail(g_prog,
                  "%s is not a fleetq data directory (no SHARDS file: fleetqd writes it on "
                  "its first start); check --data",
                  data);
    else
      fq_opt_fail(g_prog, "cannot read %s: %s", path, fq_strerror((int)n));
    return 0;
  }
  char *end = NULL;
  unsigned long v = strtoul(raw, &end, 10);
  if (end == raw || (*end && strcmp(end, "\n") != 0) || v == 0 || v > BACKUP_MAX_SHARDS) {
    fq_opt_fail(g_prog, "%s does not hold a shard count (1..%d)", path, BACKUP_MAX_SHARDS);
    return 0;
  }
  return (unsigned)v;
}

/* ---- the output directory -------------------------------------------------- */

/* Create out (0700) or accept an existing empty directory (then made
 * 0700).  Returns 0, or 1 after printing why not. */
static int prepare_out(const char *out) {
  if (mkdir(out, 0700) == 0) return 0;
  if (errno != EEXIST) return fq_opt_fail(g_prog, "cannot create %s: %s", out, fq_strerror(-errno));
  struct stat st;
  if (lstat(out, &st) != 0 || !S_ISDIR(st.st_mode))
    return fq_opt_fail(g_prog, "%s exists and is not a directory", out);
  DIR *d = opendir(out);
  if (!d) return fq_opt_fail(g_prog, "cannot read %s: %s", out, fq_strerror(-errno));
  struct dirent *e;
  bool empty = true;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = false;
  closedir(d);
  if (!empty)
    return fq_opt_fail(g_prog,
                       "%s is not empty: a backup goes into a new or empty directory (it "
                       "never overwrites or mixes with other files)",
                       out);
  if (chmod(out, 0700) != 0)
    return fq_opt_fail(g_prog, "cannot chmod %s: %s", out, fq_strerror(-errno));
  return 0;
}

/* A backup inside the data directory would be copied into the next
 * backup's warnings, and lost with the directory it protects: refuse it.
 * Compares real paths (the parent of out, which must exist). */
static int out_inside_data(const char *out, const char *data) {
  char parent[BACKUP_PATH_MAX], rp_parent[PATH_MAX], rp_data[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", out);
  size_t n = strlen(parent);
  while (n > 1 && parent[n - 1] == '/') parent[--n] = 0;
  char *slash = strrchr(parent, '/');
  if (!slash) snprintf(parent, sizeof parent, ".");
  else if (slash == parent) parent[1] = 0;
  else *slash = 0;
  if (!realpath(parent, rp_parent))
    return fq_opt_fail(g_prog, "cannot use --out %s: %s: %s", out, parent, fq_strerror(-errno));
  if (!realpath(data, rp_data)) return 0;
  size_t dn = strlen(rp_data);
  if (strncmp(rp_parent, rp_data, dn) == 0 && (rp_parent[dn] == 0 || rp_parent[dn] == '/'))
    return fq_opt_fail(g_prog,
                       "--out %s is inside the data directory %s: write the backup elsewhere "
                       "(another disk, ideally)",
                       out, data);
  return 0;
}

/* ---- copying one environment ------------------------------------------------ */

typedef struct env_result {
  uint64_t bytes;
  uint64_t txnid;        /* the snapshot's transaction id */
  uint64_t entries;      /* records in all named databases */
  unsigned ndbs;
} env_result_t;

static int lmdb_fail(const char *what, const char *path, int rc) {
  return fq_opt_fail(g_prog, "%s %s: %s", what, path, mdb_strerror(rc));
}

/* Count the records of every named database of the environment at dir
 * (opened read-only, without a lock file: nobody else uses the copy) and
 * read its last transaction id. */
static int inspect_copy(const char *dir, env_result_t *r) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc = mdb_env_create(&env);
  if (rc) return lmdb_fail("cannot inspect", dir, rc);
  mdb_env_set_maxdbs(env, 32);
  if ((rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0600)) ||
      (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) {
    rc = lmdb_fail("cannot open the copy", dir, rc);
    goto out;
  }
  MDB_envinfo ei;
  mdb_env_info(env, &ei);
  r->txnid = (uint64_t)ei.me_last_txnid;
  MDB_dbi main_dbi;
  if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) ||
      (rc = mdb_cursor_open(txn, main_dbi, &cur))) {
    rc = lmdb_fail("cannot read the copy", dir, rc);
    goto out;
  }
  MDB_val k, v;
  char name[256];
  while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
    /* The main database of fleetq's environments holds only the names of
     * the named ones. */
    if (k.mv_size == 0 || k.mv_size >= sizeof name) continue;
    memcpy(name, k.mv_data, k.mv_size);
    name[k.mv_size] = 0;
    MDB_dbi dbi;
    MDB_stat ms;
    if (mdb_dbi_open(txn, name, 0, &dbi) != 0 || mdb_stat(txn, dbi, &ms) != 0) continue;
    r->entries += ms.ms_entries;
    r->ndbs++;
  }
  rc = rc == MDB_NOTFOUND ? 0 : lmdb_fail("cannot read the copy", dir, rc);
out:
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  mdb_env_close(env);
  return rc;
}

/* Copy the environment in src_dir to dst_dir/data.mdb (dst_dir created
 * 0700, the file 0600 and fsync'd).  Returns 0 or 1 after printing why. */
static int copy_env(const char *src_dir, const char *dst_dir, bool compact, env_result_t *r) {
  char src_file[BACKUP_PATH_MAX + 64], dst_file[BACKUP_PATH_MAX + 64];
  snprintf(src_file, sizeof src_file, "%s/data.mdb", src_dir);
  snprintf(dst_file, sizeof dst_file, "%s/data.mdb", dst_dir);
  struct stat st;
  if (stat(src_file, &st) != 0)
    return fq_opt_fail(g_prog, "cannot read %s: %s", src_file, fq_strerror(-errno));
  if (mkdir(dst_dir, 0700) != 0)
    return fq_opt_fail(g_prog, "cannot create %s: %s", dst_dir, fq_strerror(-errno));

  MDB_env *env = NULL;
  int fd = -1, rc = mdb_env_create(&env);
  if (rc) return lmdb_fail("cannot open", src_dir, rc);
  /* As fleetqd opens it (src/daemon/store.c): MDB_NOTLS and the same reader
   * table size, because the lock file is shared with the daemon.  The map
   * size comes from the environment itself (LMDB takes the larger of ours
   * and the one recorded in it). */
  mdb_env_set_maxdbs(env, 16);
  mdb_env_set_maxreaders(env, 126);
  if ((rc = mdb_env_open(env, src_dir, MDB_RDONLY | MDB_NOTLS, 0600))) {
    rc = lmdb_fail("cannot open", src_dir, rc);
    goto out;
  }
  fd = open(dst_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    rc = fq_opt_fail(g_prog, "cannot create %s: %s", dst_file, fq_strerror(-errno));
    goto out;
  }
  /* A compacting copy restarts the transaction numbering in the copy, so
   * for it the manifest records the source's last committed transaction
   * read before the copy: the snapshot is that one or a later one, so
   * everything committed up to it is in the backup. */
  MDB_envinfo ei;
  mdb_env_info(env, &ei);
  uint64_t src_txn = (uint64_t)ei.me_last_txnid;
  unsigned flags = compact ? MDB_CP_COMPACT : 0;
  rc = mdb_env_copyfd2(env, fd, flags);
  if (rc == MDB_MAP_RESIZED) {
    /* fleetqd grew the map (--max-store-mb) since we opened it: adopt the
     * new size and copy again from the start. */
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
      rc = fq_opt_fail(g_prog, "cannot rewrite %s: %s", dst_file, fq_strerror(-errno));
      goto out;
    }
    mdb_env_set_mapsize(env, 0);
    rc = mdb_env_copyfd2(env, fd, flags);
  }
  if (rc) {
    rc = lmdb_fail("cannot copy", src_dir, rc);
    goto out;
  }
  if (fsync(fd) != 0 || fstat(fd, &st) != 0) {
    rc = fq_opt_fail(g_prog, "cannot write %s: %s", dst_file, fq_strerror(-errno));
    goto out;
  }
  r->bytes = (uint64_t)st.st_size;
  rc = close(fd);
  fd = -1;
  if (rc != 0) {
    rc = fq_opt_fail(g_prog, "cannot write %s: %s", dst_file, fq_strerror(-errno));
    goto out;
  }
  fsync_dir(dst_dir);
  rc = inspect_copy(dst_dir, r) ? 1 : 0;
  if (compact) r->txnid = src_txn;
out:
  if (fd >= 0) close(fd);
  mdb_env_close(env);
  return rc;
}

/* ---- the manifest ---------------------------------------------------------- */

static int write_manifest(const char *out, json_t *man) {
  char path[BACKUP_PATH_MAX + 64], tmp[BACKUP_PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/%s", out, BACKUP_MANIFEST);
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", out, BACKUP_MANIFEST);
  char *txt = json_dumps(man, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  size_t len = txt ? strlen(txt) : 0;
  char *line = txt ? malloc(len + 1) : NULL;
  if (!line) {
    free(txt);
    return fq_opt_fail(g_prog, "out of memory");
  }
  memcpy(line, txt, len);
  line[len] = '\n';
  free(txt);
  int rc = write_new_file(tmp, line, len + 1);
  free(line);
  if (rc) {
    unlink(tmp);
    return fq_opt_fail(g_prog, "cannot write %s: %s", tmp, fq_strerror(rc));
  }
  if (rename(tmp, path) != 0) {
    rc = -errno;
    unlink(tmp);
    return fq_opt_fail(g_prog, "cannot rename %s to %s: %s", tmp, path, fq_strerror(rc));
  }
  fsync_dir(out);
  return 0;
}

static void iso_now(char *out, size_t cap, int64_t ms) {
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char day[32];
  strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

/* ---- the command ------------------------------------------------------------ */

static int parse_opts(int argc, char **argv, bopts_t *o) {
  memset(o, 0, sizeof *o);
  o->data = "./fleetq-data";
  fq_opt_parser_t p;
  fq_opt_init(&p, g_prog, g_opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    switch (c) {
    case FQ_OPT_ERROR: return 2;
    case B_HELP: fq_cli_help(stdout, &g_doc, g_opts); return 0;
    case B_VERSION: return fq_opt_version(g_prog);
    case B_OUT: o->out = p.value; break;
    case B_DATA: o->data = p.value; break;
    case B_COMPACT: o->compact = true; break;
    case B_TOKEN_KEY: o->token_key = true; break;
    case B_JSON: o->json = true; break;
    default: return fq_opt_usage_error(g_prog, "option --%s is not handled", p.opt->name);
    }
  }
  if (p.next < argc) return fq_opt_usage_error(g_prog, "unexpected argument '%s'", argv[p.next]);
  if (!o->out) return fq_opt_usage_error(g_prog, "--out DIR is required");
  if (!*o->out || !*o->data) return fq_opt_usage_error(g_prog, "empty directory name");
  if (strlen(o->out) > BACKUP_PATH_MAX - 64 || strlen(o->data) > BACKUP_PATH_MAX - 64)
    return fq_opt_usage_error(g_prog, "directory name too long");
  return -1;
}

/* Whether a name in the data directory is one of fleetqd's own. */
static bool known_entry(const char *name, unsigned shards) {
  if (!strcmp(name, "LOCK") || !strcmp(name, "SHARDS") || !strcmp(name, "accounts") ||
      !strcmp(name, "token.key") || !strcmp(name, ".") || !strcmp(name, "..") ||
      !strcmp(name, "budget-usage.json") || !strcmp(name, "budget-usage.log") ||
      !strcmp(name, "budget-usage.json.tmp") || !strcmp(name, "campaigns"))
    return true;
  unsigned i;
  char tail;
  return sscanf(name, "shard-%u%c", &i, &tail) == 1 && i < shards;
}

static void warn(bool json, json_t *warnings, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void warn(bool json, json_t *warnings, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: warning: %s\n", g_prog, msg);
  if (json) json_array_append_new(warnings, json_string(msg));
}

static int cmd_backup(int argc, char **argv) {
  bopts_t o;
  int rc = parse_opts(argc, argv, &o);
  if (rc >= 0) return rc;

  struct stat st;
  if (stat(o.data, &st) != 0) {
    if (errno == ENOENT)
      return fq_opt_fail(g_prog, "data directory %s does not exist (check --data)", o.data);
    return fq_opt_fail(g_prog, "cannot read data directory %s: %s", o.data, fq_strerror(-errno));
  }
  if (!S_ISDIR(st.st_mode)) return fq_opt_fail(g_prog, "%s is not a directory", o.data);
  char shards_raw[32];
  unsigned shards = read_shards(o.data, shards_raw, sizeof shards_raw);
  if (!shards) return 1;
  char accounts_src[BACKUP_PATH_MAX + 16], accounts_db[BACKUP_PATH_MAX + 32];
  snprintf(accounts_src, sizeof accounts_src, "%s/accounts", o.data);
  snprintf(accounts_db, sizeof accounts_db, "%s/data.mdb", accounts_src);
  bool have_accounts = stat(accounts_db, &st) == 0;
  if (out_inside_data(o.out, o.data)) return 1;
  if (prepare_out(o.out)) return 1;

  int64_t t0 = fq_now_ms();
  char created[40];
  iso_now(created, sizeof created, t0);
  char abs_data[PATH_MAX];
  if (!realpath(o.data, abs_data)) snprintf(abs_data, sizeof abs_data, "%s", o.data);
  json_t *envs = json_array(), *warnings = json_array(), *not_copied = json_array();
  rc = 1;

  /* SHARDS first: a restored fleetqd checks --shards against it. */
  char path[BACKUP_PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/SHARDS", o.out);
  int e = write_new_file(path, shards_raw, strlen(shards_raw));
  if (e) {
    fq_opt_fail(g_prog, "cannot write %s: %s", path, fq_strerror(e));
    goto out;
  }
  uint64_t total = 0;
  /* The shards, the account store, then the campaigns (issue 16; a data
   * directory of an older fleetqd has none: nothing to say then). */
  char camp_db[BACKUP_PATH_MAX + 32];
  snprintf(camp_db, sizeof camp_db, "%s/campaigns/data.mdb", o.data);
  bool have_camps = stat(camp_db, &st) == 0;
  for (unsigned i = 0; i <= shards + 1; i++) {
    bool acc = i == shards, camps = i == shards + 1;
    if (acc && !have_accounts) {
      warn(o.json, warnings, "%s has no account store (accounts/data.mdb): none copied",
           o.data);
      continue;
    }
    if (camps && !have_camps) continue;
    char name[32], src[BACKUP_PATH_MAX + 32], dst[BACKUP_PATH_MAX + 32];
    if (acc) snprintf(name, sizeof name, "accounts");
    else if (camps) snprintf(name, sizeof name, "campaigns");
    else snprintf(name, sizeof name, "shard-%u", i);
    snprintf(src, sizeof src, "%s/%s", o.data, name);
    snprintf(dst, sizeof dst, "%s/%s", o.out, name);
    env_result_t r = {0};
    if (copy_env(src, dst, o.compact, &r)) goto out;
    total += r.bytes;
    json_array_append_new(envs, json_pack("{s:s, s:I, s:I, s:I, s:I, s:b}", "path", name,
                                          "bytes", (json_int_t)r.bytes, "last_txnid",
                                          (json_int_t)r.txnid, "entries", (json_int_t)r.entries,
                                          "databases", (json_int_t)r.ndbs, "compacted",
                                          o.compact));
  }

  /* token.key and whatever else is in the data directory. */
  char kpath[BACKUP_PATH_MAX + 16];
  snprintf(kpath, sizeof kpath, "%s/token.key", o.data);
  bool have_key = lstat(kpath, &st) == 0;
  bool key_copied = false;
  if (have_key && o.token_key) {
    char key[64];
    ssize_t n = read_small_file(kpath, key, sizeof key);
    if (n < 0) {
      fq_opt_fail(g_prog, "cannot read %s: %s", kpath, fq_strerror((int)n));
      goto out;
    }
    snprintf(path, sizeof path, "%s/token.key", o.out);
    e = write_new_file(path, key, (size_t)n);
    memset(key, 0, sizeof key);
    if (e) {
      fq_opt_fail(g_prog, "cannot write %s: %s", path, fq_strerror(e));
      goto out;
    }
    key_copied = true;
    warn(o.json, warnings,
         "token.key copied (--include-token-key): this backup holds usable OAuth tokens; "
         "store it as you store the key");
  } else if (have_key && have_accounts) {
    warn(o.json, warnings,
         "token.key not copied: the account store in this backup opens only with %s; keep "
         "that file apart from the backups and put it back as %s/token.key (mode 0600) "
         "before starting fleetqd on it",
         kpath, o.out);
  }
  /* The budget counts: the journal first, then the snapshot, so that a
   * snapshot written between the two (which empties the journal) only
   * makes the copied journal's lines older than it, skipped on start;
   * the other order could lose the lines of the new journal. */
  static const char *const budget_files[] = {"budget-usage.log", "budget-usage.json"};
  for (size_t i = 0; i < 2; i++) {
    int bc = copy_plain(o.data, o.out, budget_files[i]);
    if (bc < 0) {
      fq_opt_fail(g_prog, "cannot copy %s/%s: %s", o.data, budget_files[i], fq_strerror(bc));
      goto out;
    }
  }
  DIR *d = opendir(o.data);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (known_entry(de->d_name, shards)) continue;
    json_array_append_new(not_copied, json_string(de->d_name));
    warn(o.json, warnings,
         "%s/%s is not fleetqd's and was not copied (a key or config file kept there must "
         "be backed up on its own)",
         o.data, de->d_name);
  }
  if (d) closedir(d);

  int64_t t1 = fq_now_ms();
  json_t *man = json_pack(
      "{s:s, s:i, s:s, s:I, s:s, s:s, s:I, s:b, s:b, s:o, s:O, s:I, s:I}", "format",
      "fleetq-backup", "format_version", BACKUP_FORMAT, "created", created, "created_ms",
      (json_int_t)t0, "fleetq_version", FQ_VERSION, "data_dir", abs_data, "shards",
      (json_int_t)shards, "compacted", o.compact, "token_key_included", key_copied, "envs",
      envs, "not_copied", not_copied, "bytes", (json_int_t)total, "duration_ms",
      (json_int_t)(t1 - t0));
  envs = NULL;
  if (!man) {
    fq_opt_fail(g_prog, "out of memory");
    goto out;
  }
  if (write_manifest(o.out, man)) {
    json_decref(man);
    goto out;
  }
  if (o.json) {
    json_t *j = json_pack("{s:s, s:O, s:O}", "out", o.out, "manifest", man, "warnings",
                          warnings);
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (txt) printf("%s\n", txt);
    free(txt);
    json_decref(j);
  } else {
    printf("backup of %s written to %s: %u shard(s)%s, %.1f MiB in %.1f s%s\n", abs_data,
           o.out, shards, have_accounts ? " + accounts" : "", (double)total / 1048576.0,
           (double)(t1 - t0) / 1000.0, o.compact ? " (compacted)" : "");
    printf("restore: fleetqd --data %s --shards %u%s\n", o.out, shards,
           have_accounts && !key_copied ? "  (after copying token.key into it, mode 0600)" : "");
  }
  json_decref(man);
  rc = fflush(stdout) == 0 ? 0 : 1;
out:
  if (rc)
    fprintf(stderr, "%s: the backup in %s is unfinished (it has no %s): remove it\n", g_prog,
            o.out, BACKUP_MANIFEST);
  json_decref(envs);
  json_decref(warnings);
  json_decref(not_copied);
  return rc;
}

FQ_CLI_COMMAND("backup", cmd_backup,
               "hot copy of a data directory's stores, restorable with fleetqd --data")
