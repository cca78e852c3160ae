/*
 * bench/expat_floor.c: the floor for bench/parse.lua.
 *
 * Parses an XMPP stream file with a bare expat loop: a namespace-aware parser
 * (XML_ParserCreateNS with '\1' as separator, as the real parsers use), and
 * start/end element handlers that only count. No character data handler, no
 * allocation, no tree: any XMPP parser built on expat does at least this much
 * work, so its rate is the upper bound a binding can approach.
 *
 *   expat_floor FILE [REPEATS]      (REPEATS defaults to 5)
 *
 * The file is read into memory once; each repetition creates a parser, feeds
 * the buffer in 16 KiB chunks and frees the parser, timed with clock() (CPU
 * time, like Lua's os.clock). Prints key=value lines on stdout, among them
 * floor_stanzas_per_sec=<number> for the best repetition. Stanzas are the
 * elements at depth 2 (direct children of <stream:stream>).
 *
 * Build: gcc -O2 -std=c99 -Wall -Wextra -pedantic -Werror bench/expat_floor.c -lexpat
 */

#include <expat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK_SIZE (16 * 1024)

struct counts {
	int depth;
	unsigned long elements;
	unsigned long stanzas;
};

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
	struct counts *c = ud;
	(void)name;
	(void)attrs;
	c->elements++;
	if (++c->depth == 2)
		c->stanzas++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct counts *c = ud;
	(void)name;
	c->depth--;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (f == NULL)
		return NULL;
	for (;;) {
		size_t got;
		if (cap - n < CHUNK_SIZE) {
			char *nb;
			cap = cap ? cap * 2 : (size_t)1 << 20;
			nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	*len = n;
	return buf;
}

/* One full parse of buf; returns 0 on success and fills *c. */
static int parse_once(const char *buf, size_t len, struct counts *c)
{
	XML_Parser p = XML_ParserCreateNS(NULL, '\1');
	size_t off = 0;

	if (p == NULL) {
		fprintf(stderr, "expat_floor: XML_ParserCreateNS failed\n");
		return -1;
	}
	memset(c, 0, sizeof *c);
	XML_SetUserData(p, c);
	XML_SetElementHandler(p, on_start, on_end);
	do {
		size_t n = len - off < CHUNK_SIZE ? len - off : CHUNK_SIZE;
		int last = off + n == len;
		if (XML_Parse(p, buf + off, (int)n, last) != XML_STATUS_OK) {
			fprintf(stderr, "expat_floor: parse error at line %lu: %s\n",
				(unsigned long)XML_GetCurrentLineNumber(p),
				XML_ErrorString(XML_GetErrorCode(p)));
			XML_ParserFree(p);
			return -1;
		}
		off += n;
	} while (off < len);
	XML_ParserFree(p);
	return 0;
}

int main(int argc, char **argv)
{
	size_t len = 0;
	char *buf;
	long repeats = 5;
	double best = -1.0;
	struct counts c, first;
	long i;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s FILE [REPEATS]\n", argv[0]);
		return 2;
	}
	if (argc == 3) {
		char *end;
		repeats = strtol(argv[2], &end, 10);
		if (*end != '\0' || repeats < 1) {
			fprintf(stderr, "expat_floor: REPEATS must be a positive integer\n");
			return 2;
		}
	}
	buf = read_file(argv[1], &len);
	if (buf == NULL) {
		perror(argv[1]);
		return 1;
	}
	if (len == 0) {
		fprintf(stderr, "expat_floor: %s is empty\n", argv[1]);
		free(buf);
		return 1;
	}

	memset(&first, 0, sizeof first);
	for (i = 0; i < repeats; i++) {
		clock_t t0 = clock();
		double dt;
		if (parse_once(buf, len, &c) != 0) {
			free(buf);
			return 1;
		}
		dt = (double)(clock() - t0) / CLOCKS_PER_SEC;
		if (i == 0)
			first = c;
		else if (c.stanzas != first.stanzas || c.elements != first.elements) {
			fprintf(stderr, "expat_floor: counts differ between repetitions\n");
			free(buf);
			return 1;
		}
		if (best < 0 || dt < best)
			best = dt;
	}
	free(buf);
	if (best <= 0)
		best = 1.0 / CLOCKS_PER_SEC; /* below clock resolution */

	printf("expat_version=%s\n", XML_ExpatVersion());
	printf("floor_bytes=%lu\n", (unsigned long)len);
	printf("floor_repeats=%ld\n", repeats);
	printf("floor_elements=%lu\n", first.elements);
	printf("floor_stanzas=%lu\n", first.stanzas);
	printf("floor_best_sec=%.6f\n", best);
	printf("floor_stanzas_per_sec=%.0f\n", (double)first.stanzas / best);
	return 0;
}
