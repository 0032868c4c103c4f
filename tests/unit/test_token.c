/* Unit tests for token set-up: generated private token file, reuse, and every refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem/app.h"
#include "tandem/config.h"
#include "tandem/log.h"
#include "tandem/token.h"

/* Each test gets its own directory as XDG_RUNTIME_DIR (and HOME). */
struct fixture {
    char dir[64];
    char home[96];
    char tf[256]; /* TANDEM_TOKEN_FILE value: lives as long as cfg */
    struct config cfg;
    struct app app;
    char *err;
    size_t errlen;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/tandem-test-token-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->home, sizeof f->home, "%s/home", f->dir);
    mkdir(f->home, 0700);
    setenv("XDG_RUNTIME_DIR", f->dir, 1);
    setenv("HOME", f->home, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f->err);
    free(f);
    return 0;
}

/* Runs token_setup() on a fresh app, capturing the error text. */
static int run_setup(struct fixture *f)
{
    memset(&f->app, 0, sizeof f->app);
    free(f->err);
    f->err = NULL;
    FILE *err = open_memstream(&f->err, &f->errlen);
    int rc = token_setup(&f->app, &f->cfg, err);
    fclose(err);
    return rc;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return st.st_mode & 07777;
}

static void write_file(const char *path, const char *content, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    assert_int_equal(chmod(path, mode), 0); /* explicit: the umask must not decide */
}

static void test_default_path(void **state)
{
    struct fixture *f = *state;
    char path[4096], want[256];
    assert_int_equal(token_default_path(path, sizeof path), 0);
    snprintf(want, sizeof want, "%s/tandem/token", f->dir);
    assert_string_equal(path, want);
    /* without XDG_RUNTIME_DIR (or with a relative one): under HOME */
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(token_default_path(path, sizeof path), 0);
    snprintf(want, sizeof want, "%s/.local/state/tandem/token", f->home);
    assert_string_equal(path, want);
    setenv("XDG_RUNTIME_DIR", "relative/dir", 1);
    assert_int_equal(token_default_path(path, sizeof path), 0);
    assert_string_equal(path, want);
    /* too small a buffer */
    setenv("XDG_RUNTIME_DIR", f->dir, 1);
    assert_int_equal(token_default_path(path, 10), -1);
}

static void test_generated_token(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run_setup(f), 0);
    char want[256];
    snprintf(want, sizeof want, "%s/tandem/token", f->dir);
    assert_string_equal(f->app.token_path, want);
    assert_int_equal(f->app.token_len, 64);
    assert_int_equal(strlen(f->app.token), 64);
    for (size_t i = 0; i < 64; i++)
        if (!strchr("0123456789abcdef", f->app.token[i]))
            fail_msg("token char %zu '%c' is not lower-case hex", i, f->app.token[i]);
    assert_int_equal(mode_of(want), 0600);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tandem", f->dir);
    assert_int_equal(mode_of(dir), 0700);
    /* the file holds the token as one line */
    char content[200] = {0};
    FILE *fp = fopen(want, "r");
    assert_non_null(fp);
    size_t n = fread(content, 1, sizeof content - 1, fp);
    fclose(fp);
    assert_int_equal(n, 65);
    assert_int_equal(content[64], '\n');
    assert_memory_equal(content, f->app.token, 64);
}

static void test_generated_token_is_reused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run_setup(f), 0);
    char first[TOKEN_MAX_LEN + 1];
    strcpy(first, f->app.token);
    assert_int_equal(run_setup(f), 0);
    assert_string_equal(f->app.token, first);
    /* a fresh location gives a different token: it is random */
    setenv("XDG_RUNTIME_DIR", f->home, 1);
    assert_int_equal(run_setup(f), 0);
    assert_string_not_equal(f->app.token, first);
}

static void test_generated_dir_made_private(void **state)
{
    struct fixture *f = *state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tandem", f->dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    chmod(dir, 0755);
    assert_int_equal(run_setup(f), 0);
    assert_int_equal(mode_of(dir), 0700);
}

static void test_generated_under_home(void **state)
{
    struct fixture *f = *state;
    unsetenv("XDG_RUNTIME_DIR");
    assert_int_equal(run_setup(f), 0);
    char want[256];
    snprintf(want, sizeof want, "%s/.local/state/tandem/token", f->home);
    assert_string_equal(f->app.token_path, want);
    assert_int_equal(mode_of(want), 0600);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/.local/state/tandem", f->home);
    assert_int_equal(mode_of(dir), 0700);
}

static void test_generated_file_refused_when_readable(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(run_setup(f), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/tandem/token", f->dir);
    const mode_t bad[] = {0644, 0640, 0604, 0620, 0660, 0606, 0610, 0601};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(path, bad[i]), 0);
        if (run_setup(f) != -1)
            fail_msg("generated token file with mode %04o accepted", (unsigned)bad[i]);
        assert_non_null(strstr(f->err, path));
        assert_true(f->app.token_len == 0);
    }
    /* 0400 is private too */
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(run_setup(f), 0);
}

static void test_generated_location_symlink_refused(void **state)
{
    struct fixture *f = *state;
    char dir[256], path[256], target[256];
    snprintf(dir, sizeof dir, "%s/tandem", f->dir);
    snprintf(path, sizeof path, "%s/tandem/token", f->dir);
    snprintf(target, sizeof target, "%s/planted", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(target, "0123456789abcdef0123456789abcdef\n", 0600);
    assert_int_equal(symlink(target, path), 0);
    assert_int_equal(run_setup(f), -1);
    /* a symlinked directory is refused too */
    unlink(path);
    rmdir(dir);
    char real[256];
    snprintf(real, sizeof real, "%s/elsewhere", f->dir);
    assert_int_equal(mkdir(real, 0700), 0);
    assert_int_equal(symlink(real, dir), 0);
    assert_int_equal(run_setup(f), -1);
}

static void test_generated_not_ours_refused(void **state)
{
    struct fixture *f = *state;
    if (geteuid() != 0)
        skip(); /* only root can give a file away */
    assert_int_equal(run_setup(f), 0);
    char path[256];
    snprintf(path, sizeof path, "%s/tandem/token", f->dir);
    assert_int_equal(chown(path, 65534, 65534), 0);
    assert_int_equal(run_setup(f), -1);
}

static void test_configured_token(void **state)
{
    struct fixture *f = *state;
    f->cfg.token = "configured-token-0123456789";
    assert_int_equal(run_setup(f), 0);
    assert_string_equal(f->app.token, "configured-token-0123456789");
    assert_int_equal(f->app.token_len, strlen("configured-token-0123456789"));
    assert_string_equal(f->app.token_path, "");
    /* nothing was generated */
    char path[256];
    snprintf(path, sizeof path, "%s/tandem/token", f->dir);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_token_file_modes(void **state)
{
    struct fixture *f = *state;
    char *path = f->tf;
    snprintf(path, sizeof f->tf, "%s/mounted-token", f->dir);
    f->cfg.token_file = path;
    struct {
        mode_t mode;
        int ok;
    } cases[] = {
        {0600, 1}, {0400, 1}, {0640, 1}, {0440, 1}, /* group-readable secrets (fsGroup) are fine */
        {0644, 0}, {0604, 0}, {0666, 0}, {0602, 0}, {0620, 0}, {0660, 0}, {0601, 0}, {0777, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, "file-token-0123456789\n", cases[i].mode);
        int rc = run_setup(f);
        if (rc != (cases[i].ok ? 0 : -1))
            fail_msg("TANDEM_TOKEN_FILE with mode %04o: rc %d", (unsigned)cases[i].mode, rc);
        if (cases[i].ok) {
            assert_string_equal(f->app.token, "file-token-0123456789");
            assert_string_equal(f->app.token_path, path);
        } else {
            assert_non_null(strstr(f->err, path));
        }
    }
}

static void test_token_file_contents(void **state)
{
    struct fixture *f = *state;
    char *path = f->tf;
    snprintf(path, sizeof f->tf, "%s/tok", f->dir);
    f->cfg.token_file = path;
    struct {
        const char *content;
        const char *token; /* NULL = refused */
    } cases[] = {
        {"file-token-0123456789", "file-token-0123456789"},
        {"file-token-0123456789\n", "file-token-0123456789"},
        {"file-token-0123456789\r\n", "file-token-0123456789"},
        {"file-token-0123456789  \t\nsecond line ignored\n", "file-token-0123456789"},
        {"0123456789abcdef", "0123456789abcdef"}, /* 16: the minimum */
        {"0123456789abcde\n", NULL},              /* 15: too short */
        {"short\n", NULL},
        {"", NULL},
        {"\n", NULL},
        {"file token 0123456789\n", NULL},        /* inner space */
        {"file-token-\x01" "0123456789\n", NULL},
        {"file-token-\xc3\xa9-0123456789\n", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, cases[i].content, 0600);
        int rc = run_setup(f);
        if (rc != (cases[i].token ? 0 : -1))
            fail_msg("token file case %zu: rc %d", i, rc);
        if (cases[i].token)
            assert_string_equal(f->app.token, cases[i].token);
    }
    /* longer than the maximum */
    char big[400];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    write_file(path, big, 0600);
    assert_int_equal(run_setup(f), -1);
}

static void test_token_file_refusals(void **state)
{
    struct fixture *f = *state;
    char path[256], target[256], dir[256];
    snprintf(path, sizeof path, "%s/link", f->dir);
    snprintf(target, sizeof target, "%s/real-token", f->dir);
    snprintf(dir, sizeof dir, "%s/adir", f->dir);
    write_file(target, "file-token-0123456789\n", 0600);
    /* a configured file may be a symlink (Kubernetes Secret volumes): its target is checked */
    assert_int_equal(symlink(target, path), 0);
    f->cfg.token_file = f->tf;
    snprintf(f->tf, sizeof f->tf, "%s", path);
    assert_int_equal(run_setup(f), 0);
    chmod(target, 0644);
    assert_int_equal(run_setup(f), -1);
    chmod(target, 0600);
    /* missing: no token is generated at an explicit path */
    snprintf(f->tf, sizeof f->tf, "%s/missing", f->dir);
    assert_int_equal(run_setup(f), -1);
    assert_int_equal(access(f->tf, F_OK), -1);
    /* a directory */
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(f->tf, sizeof f->tf, "%s", dir);
    assert_int_equal(run_setup(f), -1);
    /* the target itself is fine */
    snprintf(f->tf, sizeof f->tf, "%s", target);
    assert_int_equal(run_setup(f), 0);
}

int main(void)
{
    log_setup(LOG_ERROR, 0); /* the token_generated/loaded info lines are noise here */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_token_is_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_dir_made_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_under_home, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_file_refused_when_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_location_symlink_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_generated_not_ours_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_configured_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_file_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_file_contents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_file_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
