/* An immutable BM25F inverted index (postings with precomputed weights), shared by the KB and reply memory. */
#ifndef TANDEM_BM25_H
#define TANDEM_BM25_H
#include <stddef.h>
#include <stdint.h>

#define BM25_MAX_FIELDS 4
/* Term saturation. 1.2 is the textbook value; short support texts do not need more. */
#define BM25_K1 1.2f

/* A field's weight (how much one occurrence counts) and length normalisation b (0..1). */
struct bm25_field {
    float weight;
    float b;
};

/* One query term with its weight (recency, kind of token). term is borrowed for the call. */
struct bm25_qterm {
    const char *term;
    uint32_t len;
    float weight;
};

/* Collects documents token by token, then builds the index. Documents are numbered 0..n-1 and
 * must be added in increasing order (all tokens of doc d before any of d+1); a document without
 * tokens is fine. Not thread-safe. */
struct bm25_builder;
/* New builder for nfields (<= BM25_MAX_FIELDS) fields; NULL on OOM or bad arguments. */
struct bm25_builder *bm25_builder_new(const struct bm25_field *fields, size_t nfields);
/* Frees a builder that was not passed to bm25_build (NULL is a no-op). */
void bm25_builder_free(struct bm25_builder *b);
/* Adds one occurrence of term[0..len) to field of doc. Returns T_OK, T_ERR_NOMEM, or
 * T_ERR_INTERNAL when doc goes backwards or field is out of range. */
int bm25_builder_add(struct bm25_builder *b, uint32_t doc, unsigned field, const char *term, size_t len);
/* Builds the index over ndocs documents (>= every doc added) and frees the builder (always,
 * also on failure). New index or NULL on OOM. */
struct bm25 *bm25_build(struct bm25_builder *b, uint32_t ndocs);

/* Read-only after build: thread-safe. */
void bm25_free(struct bm25 *ix);
uint32_t bm25_ndocs(const struct bm25 *ix);
size_t bm25_nterms(const struct bm25 *ix);
/* Bytes held by the index (for /metrics and the bench). */
size_t bm25_memory(const struct bm25 *ix);
/* Number of documents containing term, 0 when unknown. */
uint32_t bm25_df(const struct bm25 *ix, const char *term, size_t len);

/* Adds weight * idf * saturated BM25F term frequency of every query term to scores[doc]
 * (scores has bm25_ndocs() floats, zeroed by the caller). Returns the best score any document
 * could reach for this query (every known term at saturation), the scale for calibrating
 * scores to 0..1; 0 when no term is known. Terms repeated in q count repeatedly. */
float bm25_score(const struct bm25 *ix, const struct bm25_qterm *q, size_t nq, float *scores);
/* Like bm25_score over the subset of documents with in_scope[doc] != 0 (nscope of them): only
 * those are scored, and each term's idf is counted among them, so a word every document of the
 * subset shares (a brand's name among that brand's documents) weighs nothing, while a word the
 * rest of the index is full of can still tell the subset's documents apart. Terms no document of
 * the subset holds are skipped. in_scope has bm25_ndocs() bytes. Returns the attainable score
 * as bm25_score does, with the subset's idf. */
float bm25_score_within(const struct bm25 *ix, const struct bm25_qterm *q, size_t nq, const unsigned char *in_scope,
                        uint32_t nscope, float *scores);
#endif
