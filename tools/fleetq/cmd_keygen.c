/*
 * fleetq keygen / pubkey: create the fleet's P-256 command-signing key
 * pair, and show the public half of an existing one.  The private key is
 * written 0600 and never overwritten; the public key is what Tesla and the
 * cars fetch from the app's domain.
 *
 * fleetq curve-keygen: create a ZeroMQ CURVE key pair file for fleetqd
 * (--curve-secret) or for a client (--curve-key); see curvekey.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cli.h"
#include "curvekey.h"
#include "fleetq/error.h"
#include "util.h"
#include "vcp.h"

#define WELL_KNOWN_PATH "/.well-known/appspecific/com.tesla.3p.public-key.pem"

/* Write all of p to a new file (never an existing one, never through a
 * symlink) with mode; fsync before close so a crash cannot leave a
 * half-written key. */
static int write_new_file(const char *path, const void *p, size_t n, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  int rc = 0;
  if (fchmod(fd, mode) != 0) rc = -errno; /* the umask must not widen or narrow it */
  const uint8_t *b = p;
  while (rc == 0 && n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      rc = -errno;
      break;
    }
    b += w;
    n -= (size_t)w;
  }
  if (rc == 0 && fsync(fd) != 0) rc = -errno;
  if (close(fd) != 0 && rc == 0) rc = -errno;
  if (rc) unlink(path);
  return rc;
}

/* The option ids of all three commands. */
enum { K_HELP = 1000, K_VERSION, K_OUT, K_KEY, K_JSON };

/* Print a JSON object built with json_pack on one line; NULL is a failure. */
static int print_json(json_t *j) {
  char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  if (!txt) return 1;
  printf("%s\n", txt);
  free(txt);
  return fflush(stdout) == 0 ? 0 : 1;
}

/* Parse a command of this file: --help, --version, --json and the one
 * path option `want` (K_OUT or K_KEY), which is required.  Returns -1 to
 * go on, else the exit status. */
static int parse_one(int argc, char **argv, const char *prog, const fq_opt_t *opts,
                     const fq_cli_doc_t *doc, int want, const char **path, bool *json) {
  fq_opt_parser_t p;
  fq_opt_init(&p, prog, opts, argc, argv);
  int c;
  while ((c = fq_opt_next(&p)) != FQ_OPT_END) {
    if (c == FQ_OPT_ERROR) return 2;
    if (c == K_HELP) {
      fq_cli_help(stdout, doc, opts);
      return 0;
    }
    if (c == K_VERSION) return fq_opt_version(prog);
    if (c == K_JSON) *json = true;
    if (c == want) *path = p.value;
  }
  if (p.next < argc) return fq_opt_usage_error(prog, "unexpected argument '%s'", argv[p.next]);
  if (!*path || !**path)
    return fq_opt_usage_error(prog, "--%s is required", want == K_OUT ? "out" : "key");
  return -1;
}

static const fq_opt_t g_keygen_opts[] = {
    FQ_OPT_HELP(K_HELP),
    FQ_OPT_VERSION(K_VERSION),
    {"out", 0, "DIR", K_OUT, "directory for private.pem and public.pem (required;\ncreated 0700)"},
    {"json", 0, NULL, K_JSON, "print the paths and the public key as one JSON object"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_keygen_doc = {
    .usage = "fleetq keygen --out DIR [--json]",
    .about = "Creates the fleet's command-signing key pair (NIST P-256):\n"
             "  DIR/private.pem  the private key, mode 0600 (never overwritten)\n"
             "  DIR/public.pem   the public key to publish\n"
             "Host public.pem at https://<your-domain>" WELL_KNOWN_PATH "\n",
    .exit = "0 written, 1 not written (DIR already holds a key, I/O error),\n"
            "2 usage error.",
};

static int cmd_keygen(int argc, char **argv) {
  const char *dir = NULL;
  bool json = false;
  int prc = parse_one(argc, argv, "fleetq keygen", g_keygen_opts, &g_keygen_doc, K_OUT, &dir,
                      &json);
  if (prc >= 0) return prc;
  char priv_path[4096], pub_path[4096];
  if (snprintf(priv_path, sizeof priv_path, "%s/private.pem", dir) >= (int)sizeof priv_path ||
      snprintf(pub_path, sizeof pub_path, "%s/public.pem", dir) >= (int)sizeof pub_path) {
    fprintf(stderr, "fleetq keygen: path too long\n");
    return 2;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "fleetq keygen: cannot create %s: %s\n", dir, fq_strerror(-errno));
    return 1;
  }
  struct stat st;
  if (lstat(priv_path, &st) == 0 || lstat(pub_path, &st) == 0) {
    fprintf(stderr, "fleetq keygen: %s already holds a key (private.pem or public.pem); "
                    "refusing to overwrite it\n", dir);
    return 1;
  }
  int rc = 1;
  fq_err_t err;
  fq_err_clear(&err);
  fq_vcp_key_t *key = NULL;
  fq_buf_t priv, pub;
  fq_buf_init(&priv, 0);
  fq_buf_init(&pub, 0);
  if (fq_vcp_key_generate(&key, &err) || fq_vcp_key_private_pem(key, &priv, &err) ||
      fq_vcp_key_public_pem(key, &pub, &err)) {
    fprintf(stderr, "fleetq keygen: %s\n", err.msg[0] ? err.msg : "key generation failed");
    goto out;
  }
  int wr = write_new_file(priv_path, priv.data, priv.len, 0600);
  if (wr) {
    fprintf(stderr, "fleetq keygen: cannot write %s: %s\n", priv_path, fq_strerror(wr));
    goto out;
  }
  if ((wr = write_new_file(pub_path, pub.data, pub.len, 0644))) {
    fprintf(stderr, "fleetq keygen: cannot write %s: %s\n", pub_path, fq_strerror(wr));
    unlink(priv_path);
    goto out;
  }
  char hex[2 * FQ_VCP_PUBKEY_LEN + 1];
  fq_hex_encode(fq_vcp_key_public(key), FQ_VCP_PUBKEY_LEN, hex);
  if (json) {
    rc = print_json(json_pack("{s:s,s:s,s:s,s:s}", "private_key", priv_path, "public_key",
                              pub_path, "public_key_hex", hex, "host_at",
                              "https://<your-domain>" WELL_KNOWN_PATH));
    goto out;
  }
  printf("private key: %s (mode 0600: keep it secret, back it up)\n"
         "public key:  %s\n"
         "public key (hex): %s\n"
         "\n"
         "Next steps:\n"
         "  1. Host %s at https://<your-domain>%s\n"
         "  2. Register the domain: POST /api/1/partner_accounts {\"domain\": \"<your-domain>\"}\n"
         "  3. Each owner pairs the key by opening https://tesla.com/_ak/<your-domain>\n",
         priv_path, pub_path, hex, pub_path, WELL_KNOWN_PATH);
  rc = 0;
out:
  if (priv.data) OPENSSL_cleanse(priv.data, priv.alloc);
  fq_buf_free(&priv);
  fq_buf_free(&pub);
  fq_vcp_key_destroy(&key);
  return rc;
}

static const fq_opt_t g_pubkey_opts[] = {
    FQ_OPT_HELP(K_HELP),
    FQ_OPT_VERSION(K_VERSION),
    {"key", 0, "PEM", K_KEY, "the fleet private key file (required)"},
    {"json", 0, NULL, K_JSON, "print the PEM and hex forms as one JSON object"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_pubkey_doc = {
    .usage = "fleetq pubkey --key PEM [--json]",
    .about = "Prints the public key of a fleet private key file as PEM and as the\n"
             "65-byte uncompressed point in hex.  The file must not be readable by\n"
             "group or others.\n",
    .exit = "0 printed, 1 the key file was refused (unreadable, loose mode, a\n"
            "symlink, another curve), 2 usage error.",
};

static int cmd_pubkey(int argc, char **argv) {
  const char *path = NULL;
  bool json = false;
  int prc = parse_one(argc, argv, "fleetq pubkey", g_pubkey_opts, &g_pubkey_doc, K_KEY, &path,
                      &json);
  if (prc >= 0) return prc;
  fq_err_t err;
  fq_err_clear(&err);
  fq_vcp_key_t *key = NULL;
  fq_buf_t pub;
  fq_buf_init(&pub, 0);
  int rc = 1;
  if (fq_vcp_key_load(path, &key, &err) || fq_vcp_key_public_pem(key, &pub, &err)) {
    fprintf(stderr, "fleetq pubkey: %s\n", err.msg);
    goto out;
  }
  char hex[2 * FQ_VCP_PUBKEY_LEN + 1];
  fq_hex_encode(fq_vcp_key_public(key), FQ_VCP_PUBKEY_LEN, hex);
  if (json) {
    rc = print_json(json_pack("{s:s%,s:s}", "public_key_pem", (const char *)pub.data,
                              (size_t)pub.len, "public_key_hex", hex));
    goto out;
  }
  fwrite(pub.data, 1, pub.len, stdout);
  printf("%s\n", hex);
  rc = 0;
out:
  fq_buf_free(&pub);
  fq_vcp_key_destroy(&key);
  return rc;
}

static const fq_opt_t g_curve_opts[] = {
    FQ_OPT_HELP(K_HELP),
    FQ_OPT_VERSION(K_VERSION),
    {"out", 0, "FILE", K_OUT, "the key pair file to create (required)"},
    {"json", 0, NULL, K_JSON, "print the file and the public key as one JSON object"},
    {NULL, 0, NULL, 0, NULL},
};

static const fq_cli_doc_t g_curve_doc = {
    .usage = "fleetq curve-keygen --out FILE [--json]",
    .about = "Creates a ZeroMQ CURVE key pair and writes it to FILE (mode 0600, never\n"
             "overwritten) as two lines:\n"
             "  public <40-character Z85 public key>\n"
             "  secret <40-character Z85 secret key>\n"
             "and prints the public key (only the key, one line) on stdout.\n"
             "\n"
             "For the daemon: fleetqd --curve-secret FILE; give the printed key to the\n"
             "clients (--server-key, FLEETQ_SERVER_KEY).  For a client: fleetq ...\n"
             "--curve-key FILE (or FLEETQ_CURVE_KEY); list the printed key in fleetqd's\n"
             "clients file.  Keep FILE secret: whoever has it acts as that key.\n",
    .exit = "0 written, 1 not written (FILE exists, I/O error), 2 usage error.",
};

static int cmd_curve_keygen(int argc, char **argv) {
  const char *out = NULL;
  bool json = false;
  int prc = parse_one(argc, argv, "fleetq curve-keygen", g_curve_opts, &g_curve_doc, K_OUT, &out,
                      &json);
  if (prc >= 0) return prc;
  char pub[FQ_CURVE_KEY_LEN + 1];
  fq_err_t err;
  fq_err_clear(&err);
  if (fq_curve_keyfile_write(out, pub, &err)) {
    fprintf(stderr, "fleetq curve-keygen: %s\n", err.msg);
    return 1;
  }
  if (json) return print_json(json_pack("{s:s,s:s}", "file", out, "public_key", pub));
  printf("%s\n", pub);
  return fflush(stdout) == 0 ? 0 : 1;
}

FQ_CLI_COMMAND("keygen", cmd_keygen, "create the fleet's command-signing key pair")
FQ_CLI_COMMAND("pubkey", cmd_pubkey, "print the public key of a fleet private key")
FQ_CLI_COMMAND("curve-keygen", cmd_curve_keygen,
               "create a CURVE key pair file for fleetqd or a client")
