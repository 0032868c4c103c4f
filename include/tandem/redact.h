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
struct redact_map *redact_map_new(void);
void redact_map_free(struct redact_map *m);
/* The original value behind a placeholder such as "[CARD_1]"; borrowed; NULL when unknown. */
const char *redact_map_lookup(const struct redact_map *m, const char *placeholder);

/* Appends text[0..len) to out with every PII value replaced by its placeholder. map may be NULL
 * (numbering then restarts per call). Input that is not valid UTF-8 is copied with invalid bytes
 * replaced by U+FFFD. Returns T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE; on error out holds nothing
 * new that could leak (callers must then send nothing). counts, if not NULL, gets per-kind counts
 * added. Thread-safe when map is NULL or owned by the caller. */
int redact_text(const char *text, size_t len, struct redact_map *map, struct buf *out,
                unsigned counts[REDACT__KINDS]);
#endif
