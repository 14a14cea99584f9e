/*
 * fleetqd --demo: the whole system on one machine with no Tesla account.
 * A fleetsim child process plays Fleet API with a demo account, three cars
 * and a Powerwall site, configured through its config file only (fleetqd
 * does not link the simulator); the daemon runs as usual against it; a
 * tour thread then submits a scripted set of commands over the daemon's
 * own ROUTER socket and prints the PUB status stream as it happens.
 */
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <openssl/crypto.h>

#include "accounts.h"
#include "auth.h"
#include "fleetq/wire.h"
#include "log.h"
#include "util.h"
#include "vcp.h"

#define DEMO_VIN_OK "5YJ3E1EA1PF000001"
#define DEMO_VIN_ASLEEP "5YJ3E1EA1PF000002"
#define DEMO_VIN_UNPAIRED "5YJ3E1EA1PF000003"
#define DEMO_SITE 42
/* How long fleetsim may take to print its address (a sanitizer build
 * starts slowly), and to exit after SIGTERM before it gets SIGKILL. */
#define SIM_START_MS 20000
#define SIM_STOP_MS 5000

struct fq_demo {
  pid_t sim_pid; /* the fleetsim child, 0 when none runs */
  char base_url[64];
  char allow_host[64];
  char key_path[1024];
  char listen[256], publish[256];
  pthread_t tour;
  bool tour_started;
  int stop_fd;
  int result;
};

/* A JWT-shaped access token: fleetq reads `scp` and `exp` from it; the
 * simulator accepts it because its config lists it. */
static void make_token(const char *sub, const char *scopes_json, const char *aud, char *out,
                       size_t cap) {
  char payload[512], h64[128], p64[800];
  snprintf(payload, sizeof payload, "{\"sub\":\"%s\",\"scp\":%s,\"exp\":%lld,\"aud\":[\"%s\"]}",
           sub, scopes_json, (long long)(fq_now_ms() / 1000 + 8 * 3600), aud);
  static const char hdr[] = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
  fq_base64url_encode((const uint8_t *)hdr, sizeof hdr - 1, h64);
  fq_base64url_encode((const uint8_t *)payload, strlen(payload), p64);
  snprintf(out, cap, "%s.%s.ZGVtbw", h64, p64);
}

/* --- the fleetsim child ------------------------------------------------- */

/* The fleetsim program: $FQ_FLEETSIM, else the one beside this executable
 * (build/bin holds both, and so does an installed bin directory). */
static int sim_program(char *out, size_t cap, fq_err_t *err) {
  const char *env = getenv("FQ_FLEETSIM");
  if (env && env[0]) {
    if (strlen(env) >= cap) return fq_errf(err, FQ_ECONFIG, "FQ_FLEETSIM: path too long");
    snprintf(out, cap, "%s", env);
  } else {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return fq_errf(err, -errno, "cannot find this executable: %s", fq_strerror(-errno));
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    if (strlen(self) + sizeof "/fleetsim" > cap)
      return fq_errf(err, FQ_ECONFIG, "executable path too long");
    snprintf(out, cap, "%s/fleetsim", self);
  }
  if (access(out, X_OK) != 0)
    return fq_errf(err, FQ_ECONFIG,
                   "cannot run %s (%s): build it (cmake --build build --target fleetsim) or "
                   "set FQ_FLEETSIM to its path",
                   out, fq_strerror(-errno));
  return 0;
}

/* Write the simulator's config next to the fleet key, 0600 (it holds the
 * demo tokens), refusing to follow or reuse an existing file. */
static int write_sim_config(const json_t *conf, const char *path, fq_err_t *err) {
  int rc = 0;
  char *text = json_dumps(conf, JSON_INDENT(1));
  if (!text) return fq_errf(err, -ENOMEM, "out of memory");
  size_t len = strlen(text), done = 0;
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = fq_errf(err, FQ_ECONFIG, "cannot write %s: %s", path, fq_strerror(-errno));
    goto out;
  }
  while (done < len) {
    ssize_t w = write(fd, text + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      rc = fq_errf(err, FQ_ECONFIG, "cannot write %s: %s", path, fq_strerror(-errno));
      goto out;
    }
    done += (size_t)w;
  }
out:
  if (fd >= 0 && close(fd) != 0 && !rc)
    rc = fq_errf(err, FQ_ECONFIG, "cannot write %s: %s", path, fq_strerror(-errno));
  OPENSSL_cleanse(text, len);
  free(text);
  return rc;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Stop the child: SIGTERM, up to SIM_STOP_MS for it to exit, then
 * SIGKILL.  Says so on stderr when it did not exit cleanly (a sanitizer
 * build reports leaks through its exit status). */
static void sim_stop(fq_demo_t *d) {
  if (d->sim_pid <= 0) return;
  int status = 0;
  pid_t r = 0;
  kill(d->sim_pid, SIGTERM);
  for (long waited = 0; waited < SIM_STOP_MS; waited += 20) {
    r = waitpid(d->sim_pid, &status, WNOHANG);
    if (r < 0 && errno == EINTR) r = 0;
    if (r != 0) break;
    sleep_ms(20);
  }
  if (r == 0) {
    fprintf(stderr, "fleetqd --demo: fleetsim did not stop within %d ms, killing it\n",
            SIM_STOP_MS);
    kill(d->sim_pid, SIGKILL);
    while ((r = waitpid(d->sim_pid, &status, 0)) < 0 && errno == EINTR) {
    }
  } else if (r > 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
    if (WIFEXITED(status))
      fprintf(stderr, "fleetqd --demo: fleetsim exited with status %d\n", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
      fprintf(stderr, "fleetqd --demo: fleetsim ended by signal %d\n", WTERMSIG(status));
  }
  d->sim_pid = 0;
}

/* Read the line fleetsim prints once it serves ("fleetsim listening on
 * http://HOST:PORT") from fd, within SIM_START_MS; the URL goes to url. */
static int sim_read_address(int fd, char *url, size_t cap, fq_err_t *err) {
  static const char prefix[] = "fleetsim listening on ";
  char line[256];
  size_t n = 0;
  int64_t until = fq_now_ms() + SIM_START_MS;
  while (!memchr(line, '\n', n)) {
    int64_t left = until - fq_now_ms();
    if (left <= 0) return fq_errf(err, -ETIMEDOUT, "fleetsim did not start within %d ms", SIM_START_MS);
    struct pollfd p = {fd, POLLIN, 0};
    int pr = poll(&p, 1, (int)left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) return fq_errf(err, -errno, "poll: %s", fq_strerror(-errno));
    if (pr == 0) continue;
    if (n == sizeof line - 1) return fq_errf(err, FQ_EPROTO, "fleetsim printed an overlong line");
    ssize_t r = read(fd, line + n, sizeof line - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return fq_errf(err, -errno, "reading from fleetsim: %s", fq_strerror(-errno));
    if (r == 0)
      return fq_errf(err, FQ_EINTERNAL,
                     "fleetsim exited before it served (its messages, if any, are above)");
    n += (size_t)r;
  }
  line[n] = 0;
  line[strcspn(line, "\r\n")] = 0;
  const char *u = line + sizeof prefix - 1;
  if (strncmp(line, prefix, sizeof prefix - 1) != 0 || strncmp(u, "http://", 7) != 0 ||
      strlen(u) >= cap)
    return fq_errf(err, FQ_EPROTO, "unexpected first line from fleetsim: %s", line);
  snprintf(url, cap, "%s", u);
  return 0;
}

/* Start fleetsim on an ephemeral loopback port with config conf_path and
 * read its address.  The child dies with fleetqd (PR_SET_PDEATHSIG) even
 * when fleetqd ends without fq_demo_destroy, and ignores the terminal's
 * SIGINT: fleetqd drains on Ctrl-C and stops the simulator itself
 * afterwards. */
static int sim_spawn(fq_demo_t *d, const char *conf_path, int log_level, fq_err_t *err) {
  static const char *const level_names[] = {"debug", "info", "warn", "error"};
  char prog[PATH_MAX];
  int rc = sim_program(prog, sizeof prog, err);
  if (rc) return rc;
  const char *level =
      log_level >= FQ_LOG_DEBUG && log_level <= FQ_LOG_ERROR ? level_names[log_level] : "info";
  /* Everything the child needs is made before fork: between fork and exec
   * only async-signal-safe calls are allowed. */
  char *const argv[] = {prog, "--listen", "127.0.0.1:0", "--config", (char *)conf_path,
                        "--log-level", (char *)level, NULL};
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return fq_errf(err, -errno, "pipe: %s", fq_strerror(-errno));
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) {
    rc = fq_errf(err, -errno, "/dev/null: %s", fq_strerror(-errno));
    close(out[0]);
    close(out[1]);
    return rc;
  }
  pid_t parent = getpid();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    sigaction(SIGINT, &ign, NULL);
    if (dup2(devnull, 0) < 0 || dup2(out[1], 1) < 0) _exit(127);
    execv(prog, argv);
    _exit(127);
  }
  int fork_errno = errno;
  close(out[1]);
  close(devnull);
  if (pid < 0) {
    close(out[0]);
    return fq_errf(err, -fork_errno, "fork: %s", fq_strerror(-fork_errno));
  }
  d->sim_pid = pid;
  char url[sizeof d->base_url];
  rc = sim_read_address(out[0], url, sizeof url, err);
  /* fleetsim writes nothing more on stdout; closing our end cannot block
   * it, and it ignores SIGPIPE. */
  close(out[0]);
  if (rc) return rc;
  snprintf(d->base_url, sizeof d->base_url, "%s", url);
  snprintf(d->allow_host, sizeof d->allow_host, "%s", url + 7);
  return 0;
}

/* --- preparation ----------------------------------------------------------- */

int fq_demo_prepare(fq_config_t *cfg, fq_demo_t **out, fq_err_t *err) {
  fq_demo_t *d = calloc(1, sizeof *d);
  int rc = 0;
  json_t *conf = NULL;
  fq_vcp_key_t *key = NULL;
  fq_buf_t pem;
  fq_buf_init(&pem, 0);
  fq_accounts_t *acc = NULL;
  char full[1024] = "", charging[1024] = "", conf_path[1100];
  if (!d) return fq_errf(err, -ENOMEM, "out of memory");
  if (!cfg->data_dir[0] || strcmp(cfg->data_dir, "./fleetq-data") == 0) {
    char tmpl[] = "/tmp/fleetq-demo-XXXXXX";
    if (!mkdtemp(tmpl)) {
      rc = fq_errf(err, -errno, "cannot create a demo data directory: %s", fq_strerror(-errno));
      goto out;
    }
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s", tmpl);
  } else if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
    rc = fq_errf(err, -errno, "cannot create %s: %s", cfg->data_dir, fq_strerror(-errno));
    goto out;
  }
  /* A fresh fleet key, written 0600 like a real one. */
  if (strlen(cfg->data_dir) + 16 >= sizeof d->key_path) {
    rc = fq_errf(err, FQ_ECONFIG, "data directory path too long");
    goto out;
  }
  memcpy(d->key_path, cfg->data_dir, strlen(cfg->data_dir));
  memcpy(d->key_path + strlen(cfg->data_dir), "/fleet-key.pem", 15);
  snprintf(conf_path, sizeof conf_path, "%s/fleetsim.json", cfg->data_dir);
  if ((rc = fq_vcp_key_generate(&key, err)) != 0) goto out;
  if ((rc = fq_vcp_key_private_pem(key, &pem, err)) != 0) goto out;
  FILE *f = fopen(d->key_path, "wx");
  if (!f || chmod(d->key_path, 0600) != 0 || fwrite(pem.data, 1, pem.len, f) != pem.len) {
    if (f) fclose(f);
    rc = fq_errf(err, FQ_EKEYFILE, "cannot write %s: %s", d->key_path, fq_strerror(-errno));
    goto out;
  }
  fclose(f);
  memcpy(cfg->key_file, d->key_path, sizeof d->key_path);
  char pub_hex[2 * FQ_VCP_PUBKEY_LEN + 1];
  fq_hex_encode(fq_vcp_key_public(key), FQ_VCP_PUBKEY_LEN, pub_hex);

  /* The simulator's world, all of it in its config (docs/fleetsim.md): our
   * key is on the whitelist of the first two cars, not of the third; the
   * second sleeps; the demo-charging account lacks vehicle_cmds. */
  conf = json_pack("{s:s, s:i, s:[], s:[{s:s, s:b}, {s:s, s:b, s:b, s:i}, {s:s, s:b}], "
                   "s:[{s:i}]}",
                   "fleet_public_key", pub_hex, "wake_ms", 1500, "accounts", "vehicles", "vin",
                   DEMO_VIN_OK, "paired", 1, "vin", DEMO_VIN_ASLEEP, "paired", 1, "asleep", 1,
                   "wake_ms", 1500, "vin", DEMO_VIN_UNPAIRED, "paired", 0, "sites", "id",
                   DEMO_SITE);
  if (!conf) {
    rc = fq_errf(err, FQ_EINTERNAL, "cannot build the demo config");
    goto out;
  }
  /* The tokens cannot carry the simulator's port in their audience (the
   * port is known only once it serves); the simulator does not check
   * `aud`. */
  make_token("demo", "[\"openid\",\"offline_access\",\"vehicle_device_data\",\"vehicle_cmds\","
             "\"vehicle_charging_cmds\",\"energy_device_data\",\"energy_cmds\"]",
             "fleetq-demo", full, sizeof full);
  make_token("demo-charging", "[\"openid\",\"offline_access\",\"vehicle_charging_cmds\"]",
             "fleetq-demo", charging, sizeof charging);
  json_t *accts = json_object_get(conf, "accounts");
  json_array_append_new(
      accts, json_pack("{s:s, s:s, s:s, s:[s,s,s,s,s,s,s], s:[s,s,s], s:[i]}", "id", "demo",
                       "token", full, "refresh_token", "demo-refresh-1", "scopes", "openid",
                       "offline_access", "vehicle_device_data", "vehicle_cmds",
                       "vehicle_charging_cmds", "energy_device_data", "energy_cmds", "vins",
                       DEMO_VIN_OK, DEMO_VIN_ASLEEP, DEMO_VIN_UNPAIRED, "sites", DEMO_SITE));
  json_array_append_new(
      accts, json_pack("{s:s, s:s, s:s, s:[s,s,s], s:[s]}", "id", "demo-charging", "token",
                       charging, "refresh_token", "demo-refresh-2", "scopes", "openid",
                       "offline_access", "vehicle_charging_cmds", "vins", DEMO_VIN_OK));
  if ((rc = write_sim_config(conf, conf_path, err)) != 0) goto out;
  if ((rc = sim_spawn(d, conf_path, cfg->log_level, err)) != 0) goto out;
  snprintf(cfg->allow_host, sizeof cfg->allow_host, "%s", d->allow_host);
  if (!cfg->pairing_domain[0] || strcmp(cfg->pairing_domain, "fleetq.example.com") == 0)
    snprintf(cfg->pairing_domain, sizeof cfg->pairing_domain, "demo.fleetq.example.com");
  cfg->wake_poll_ms = 500;
  cfg->retry_backoff_ms = 300;

  /* The demo accounts, stored the way `fleetq account add` stores them. */
  acc = fq_accounts_open(cfg->data_dir, err);
  if (!acc) {
    rc = err->code ? err->code : FQ_ESTORAGE;
    goto out;
  }
  const char *ids[2] = {"demo", "demo-charging"};
  const char *toks[2] = {full, charging};
  for (int i = 0; i < 2; i++) {
    fq_account_t *a = fq_account_new();
    if (!a) {
      rc = fq_errf(err, -ENOMEM, "out of memory");
      goto out;
    }
    snprintf(a->id, sizeof a->id, "%s", ids[i]);
    snprintf(a->client_id, sizeof a->client_id, "fleetq-demo-client");
    snprintf(a->base_url, sizeof a->base_url, "%s", d->base_url);
    snprintf(a->access_token, sizeof a->access_token, "%s", toks[i]);
    snprintf(a->refresh_token, sizeof a->refresh_token, "demo-refresh-%d", i + 1);
    rc = fq_accounts_put(acc, a, err);
    fq_account_free(&a);
    if (rc) goto out;
  }
  snprintf(d->listen, sizeof d->listen, "%s", cfg->listen);
  snprintf(d->publish, sizeof d->publish, "%s", cfg->publish);
  printf("fleetq demo\n"
         "  data directory  %s\n"
         "  Fleet API       %s (fleetsim, pid %ld)\n"
         "  requests        %s\n"
         "  status stream   %s\n\n",
         cfg->data_dir, d->base_url, (long)d->sim_pid, cfg->listen, cfg->publish);
  fflush(stdout);
  *out = d;
  d = NULL;
out:
  OPENSSL_cleanse(full, sizeof full);
  OPENSSL_cleanse(charging, sizeof charging);
  fq_accounts_destroy(&acc);
  json_decref(conf);
  if (pem.data) OPENSSL_cleanse(pem.data, pem.alloc);
  fq_buf_free(&pem);
  fq_vcp_key_destroy(&key);
  if (d) fq_demo_destroy(&d);
  return rc;
}

/* --- the tour -------------------------------------------------------------- */

typedef struct step {
  const char *title;
  const char *account;
  const char *vin;
  uint64_t site;
  const char *command;
  const char *pkey;  /* one int or bool param, or NULL */
  int ival;
  bool is_bool;
  const char *expect; /* final state */
} step_t;

static const step_t tour[] = {
    {"Lock a car (VCSEC, signed)", "demo", DEMO_VIN_OK, 0, "door_lock", NULL, 0, false,
     "succeeded"},
    {"Set a charge limit of 80 % (INFOTAINMENT, signed)", "demo", DEMO_VIN_OK, 0,
     "set_charge_limit", "percent", 80, false, "succeeded"},
    {"Flash the lights of a sleeping car: one wake_up, then the command", "demo",
     DEMO_VIN_ASLEEP, 0, "flash_lights", NULL, 0, false, "succeeded"},
    {"Honk a car that has not paired our virtual key", "demo", DEMO_VIN_UNPAIRED, 0,
     "honk_horn", NULL, 0, false, "failed"},
    {"Unlock with a token that only has vehicle_charging_cmds", "demo-charging", DEMO_VIN_OK, 0,
     "door_unlock", NULL, 0, false, "failed"},
    {"Set the Powerwall backup reserve to 30 %", "demo", NULL, DEMO_SITE, "backup",
     "backup_reserve_percent", 30, false, "succeeded"},
};

static int buf_write(void *data, const char *p, size_t n) {
  return fq_buf_append((fq_buf_t *)data, p, n) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) {
  msgpack_pack_str(pk, strlen(s));
  msgpack_pack_str_body(pk, s, strlen(s));
}

static void pack_submit(fq_buf_t *b, const step_t *s, int i) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, b, buf_write);
  msgpack_pack_map(&pk, s->pkey ? 7 : 6);
  pk_str(&pk, "op");
  pk_str(&pk, "submit");
  pk_str(&pk, "tenant");
  pk_str(&pk, "demo");
  char key[64];
  snprintf(key, sizeof key, "tour-%lld-%d", (long long)fq_now_ms(), i);
  pk_str(&pk, "key");
  pk_str(&pk, key);
  pk_str(&pk, "account");
  pk_str(&pk, s->account);
  if (s->vin) {
    pk_str(&pk, "vin");
    pk_str(&pk, s->vin);
  } else {
    pk_str(&pk, "site");
    msgpack_pack_uint64(&pk, s->site);
  }
  pk_str(&pk, "command");
  pk_str(&pk, s->command);
  if (s->pkey) {
    pk_str(&pk, "params");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, s->pkey);
    msgpack_pack_int(&pk, s->ival);
  }
}

/* Read the `id` of a submit reply. */
static bool reply_id(const uint8_t *p, size_t n, char *id, size_t cap) {
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  bool ok = false;
  if (msgpack_unpack_next(&u, (const char *)p, n, NULL) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
      msgpack_object k = u.data.via.map.ptr[i].key, v = u.data.via.map.ptr[i].val;
      if (k.type == MSGPACK_OBJECT_STR && k.via.str.size == 2 && !memcmp(k.via.str.ptr, "id", 2) &&
          v.type == MSGPACK_OBJECT_STR && v.via.str.size < cap) {
        memcpy(id, v.via.str.ptr, v.via.str.size);
        id[v.via.str.size] = 0;
        ok = true;
      }
    }
  }
  msgpack_unpacked_destroy(&u);
  return ok;
}

static void *tour_main(void *arg) {
  fq_demo_t *d = arg;
  void *ctx = zmq_ctx_new();
  void *req = zmq_socket(ctx, ZMQ_DEALER), *sub = zmq_socket(ctx, ZMQ_SUB);
  int linger = 0, to = 5000;
  zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
  zmq_setsockopt(req, ZMQ_RCVTIMEO, &to, sizeof to);
  zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "demo/", 5);
  zmq_connect(req, d->listen);
  zmq_connect(sub, d->publish);
  usleep(300 * 1000); /* let the subscription reach the publisher */
  fq_buf_t b;
  fq_buf_init(&b, 0);
  int matched = 0, n = (int)(sizeof tour / sizeof tour[0]);
  for (int i = 0; i < n; i++) {
    const step_t *s = &tour[i];
    printf("\n[%d/%d] %s\n      %s %s%s%s\n", i + 1, n, s->title, s->command,
           s->vin ? s->vin : "site ", s->vin ? "" : "42", s->pkey ? " (with a parameter)" : "");
    fflush(stdout);
    fq_buf_reset(&b);
    pack_submit(&b, s, i);
    zmq_send(req, b.data, b.len, 0);
    uint8_t rbuf[4096];
    int rn = zmq_recv(req, rbuf, sizeof rbuf, 0);
    char id[32];
    if (rn <= 0 || !reply_id(rbuf, (size_t)(rn > (int)sizeof rbuf ? (int)sizeof rbuf : rn), id,
                             sizeof id)) {
      printf("      no answer from fleetqd\n");
      continue;
    }
    const char *final = NULL;
    int64_t until = fq_now_ms() + 30000;
    while (!final && fq_now_ms() < until) {
      zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
      if (zmq_poll(&it, 1, 200) <= 0) continue;
      zmq_msg_t topic, body;
      zmq_msg_init(&topic);
      zmq_msg_init(&body);
      zmq_msg_recv(&topic, sub, 0);
      zmq_msg_recv(&body, sub, 0);
      fq_event_t ev;
      fq_err_t e;
      if (fq_wire_event_unpack(zmq_msg_data(&body), zmq_msg_size(&body), &ev, &e) == 0 &&
          ev.id.n == strlen(id) && memcmp(ev.id.p, id, ev.id.n) == 0) {
        printf("      %-11s -> %-11s", ev.prev >= 0 ? fq_state_name(ev.prev) : "",
               fq_state_name(ev.state));
        if (ev.http) printf(" http %d", ev.http);
        if (ev.fault >= 0) printf(" fault %d", ev.fault);
        if (ev.reason.n) printf("\n                  %.*s", (int)ev.reason.n, ev.reason.p);
        printf("\n");
        fflush(stdout);
        if (fq_state_terminal(ev.state)) final = fq_state_name(ev.state);
      }
      zmq_msg_close(&topic);
      zmq_msg_close(&body);
    }
    bool ok = final && strcmp(final, s->expect) == 0;
    matched += ok;
    printf("      => %s (%s)\n", final ? final : "no final state in 30 s",
           ok ? "as expected" : "NOT as expected");
  }
  printf("\nfleetq demo: %d of %d steps ended as expected\n", matched, n);
  fflush(stdout);
  d->result = matched == n ? 0 : 1;
  fq_buf_free(&b);
  zmq_close(req);
  zmq_close(sub);
  zmq_ctx_term(ctx);
  /* The tour is over: ask the daemon to drain and exit. */
  char c = 1;
  ssize_t w = write(d->stop_fd, &c, 1);
  (void)w;
  return NULL;
}

int fq_demo_start_tour(fq_demo_t *d, int stop_fd) {
  d->stop_fd = stop_fd;
  int rc = pthread_create(&d->tour, NULL, tour_main, d);
  if (rc) return -rc;
  d->tour_started = true;
  return 0;
}

int fq_demo_result(fq_demo_t *d) {
  if (d->tour_started) {
    pthread_join(d->tour, NULL);
    d->tour_started = false;
  }
  return d->result;
}

void fq_demo_destroy(fq_demo_t **dp) {
  if (!dp || !*dp) return;
  fq_demo_t *d = *dp;
  if (d->tour_started) pthread_join(d->tour, NULL);
  sim_stop(d);
  free(d);
  *dp = NULL;
}
