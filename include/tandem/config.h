/* Configuration: one table of settings, filled from TANDEM_* env vars and --flags, validated once. */
#ifndef TANDEM_CONFIG_H
#define TANDEM_CONFIG_H
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#include "tandem/log.h"

enum redis_kind { REDIS_TCP, REDIS_UNIX, REDIS_SENTINEL };

#define REDIS_MAX_SENTINELS 8

struct redis_endpoint {
    char host[256];
    unsigned port;
};

struct redis_target {
    enum redis_kind kind;
    struct redis_endpoint tcp;                          /* REDIS_TCP */
    char path[108];                                     /* REDIS_UNIX (sun_path size) */
    struct redis_endpoint sentinels[REDIS_MAX_SENTINELS]; /* REDIS_SENTINEL */
    size_t n_sentinels;
    char master_name[128];
    int db;
    char *user;     /* ACL user or NULL */
    char *password; /* or NULL; secret */
};

struct config {
    /* raw values, as given (owned by the config) */
    char *listen;
    char *redis_url;
    char *redis_prefix;
    char *token;      /* secret */
    char *token_file;
    char *allowed_hosts;
    char *allowed_origins;
    char *kb;
    char *alert_rules;
    char *llm_url;
    char *llm_model;
    char *llm_api_key; /* secret */
    char *llm_api_key_file;
    char *llm_system_prompt_file;
    char *llm_temperature_text;
    char *llm_proxy; /* may hold credentials: masked when printed */
    char *llm_ca_file;
    char *log_level_name;
    char *log_format;
    long llm_timeout_ms;
    long llm_stream;
    long llm_json_mode;
    long llm_max_tokens;
    long llm_first_byte_ms; /* 0: the smaller of LLM_DEFAULT_FIRST_BYTE_MS and the timeout */
    long llm_stall_ms;
    long llm_breaker_failures;
    long llm_breaker_cooldown_ms;
    long quality_per_agent;
    long max_body;
    long max_transcripts_body;
    long threads;
    long max_connections;
    long context_messages;
    long history_entries;
    long redis_timeout_ms;
    long idle_timeout_s;

    /* derived by config_validate() */
    struct sockaddr_storage listen_addr;
    socklen_t listen_addr_len;
    unsigned port;
    struct redis_target redis;
    char **hosts;   /* allowed "host:port" values, lower case */
    size_t n_hosts;
    char **origins; /* allowed Origin values, exact */
    size_t n_origins;
    enum log_level log_level;
    int log_json;
    double llm_temperature;
};

/* Fills cfg with defaults, then env vars, then argv flags (--name=value or --name value), then
 * validates. Returns 0 on success; on a bad value writes one line naming the variable and the
 * accepted form to err and returns -1. *action is set to 'h' (--help), 'v' (--version),
 * 'p' (--print-config) or 0. cfg must be released with config_cleanup() either way. */
int config_load(struct config *cfg, int argc, char **argv, char **envp, char *action, FILE *err);
void config_cleanup(struct config *cfg);
void config_print_help(FILE *out);
/* Prints every setting as ENV=value, secrets masked. */
void config_print(const struct config *cfg, FILE *out);
/* Parses a TANDEM_REDIS_URL into t (t->user/password are malloc'd). Returns 0 or -1. */
int config_parse_redis_url(const char *url, struct redis_target *t);
#endif
