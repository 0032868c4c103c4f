/* PII redaction: applied to anything that leaves the machine, is logged, or is stored as feedback. */
#ifndef TANDEM_REDACT_H
#define TANDEM_REDACT_H
#include <stddef.h>

#include "tandem/buf.h"

/* Kinds of PII, each with its placeholder stem: [CARD_1], [IBAN_1], [EMAIL_1], [PHONE_1],
 * [SSN_1], [PNR_1] (Swedish personnummer / samordningsnummer). */
enum redact_kind { REDACT_CARD, REDACT_IBAN, REDACT_EMAIL, REDACT_PHONE, REDACT_SSN, REDACT_PNR,
                   REDACT__KINDS };

/* Keeps placeholders consistent within one conversation: the same value gets the same
 * placeholder every time. Lives in memory only (never written out). Not thread-safe. */
struct redact_map;
/* New empty map (free with redact_map_free); NULL on OOM. redact_map_free(NULL) is a no-op. */
struct redact_map *redact_map_new(void);
void redact_map_free(struct redact_map *m);
/* The original value behind a placeholder such as "[CARD_1]" (as first written, valid UTF-8);
 * borrowed, valid until redact_map_free(m); NULL when unknown or m is NULL. */
const char *redact_map_lookup(const struct redact_map *m, const char *placeholder);
/* How many distinct values of kind m holds (the highest placeholder number); 0 for NULL. */
unsigned redact_map_count(const struct redact_map *m, enum redact_kind kind);
/* "CARD", "IBAN", "EMAIL", "PHONE", "SSN", "PNR" (static storage; "UNKNOWN" out of range): the
 * placeholder stem, also usable as a metrics label. */
const char *redact_kind_name(enum redact_kind kind);

/* Appends text[0..len) to out with every PII value replaced by its placeholder. map may be NULL
 * (numbering then restarts per call). Input that is not valid UTF-8 is copied with invalid bytes
 * replaced by U+FFFD. Returns T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE; on error out holds nothing
 * new that could leak (callers must then send nothing). counts, if not NULL, gets per-kind counts
 * added. Thread-safe when map is NULL or owned by the caller. */
int redact_text(const char *text, size_t len, struct redact_map *map, struct buf *out,
                unsigned counts[REDACT__KINDS]);
/* Same-value rule: a card with spaces or dashes, an e-mail in other case, a personnummer with or
 * without the century, "00" or "+" before a country code all get one placeholder. Redacting the
 * output again (same map or none) changes nothing. Bounded work: linear in len. Inputs of 4 GiB or
 * more and maps past about a million distinct values fail with T_ERR_TOO_LARGE. */

/* The reverse, for text that stays on this machine (an LLM answer shown to the agent): appends
 * text[0..len) to out with every placeholder m knows replaced by its original; unknown ones and
 * other text are copied (invalid UTF-8 -> U+FFFD). Returns T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE
 * (out then unchanged). Never use its output for anything that leaves the machine. */
int redact_restore(const char *text, size_t len, const struct redact_map *m, struct buf *out);
#endif
