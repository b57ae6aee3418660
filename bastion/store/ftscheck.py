"""The PostgreSQL side of full-text search's exact check: migration 13's SQL (plpgsql).

tsvector cannot hold a line exactly: positions stop at 16383, a lexeme keeps at most 255 of
them, a word of 2,047 bytes or more is dropped (and the words after it move up one
position), and ``array_to_tsvector`` silently mangles one that long.  So from migration 13
the index holds no positions at all, only each line's set of words, and everything that
needs positions is decided on the line's own tokens:

* a line's tokens: ``bastion_fts_text(line)`` (migration 8: runs of letters and digits,
  lower case, diacritics removed, as SQLite's unicode61 tokenizer splits it) split at its
  spaces, one array element per token in order: position ``p`` is element ``p``.
* ``bastion_fts_vector(line)`` (the GIN index's expression, view ``commands_fts.tsv``): the
  set of its tokens (``array_to_tsvector``, no positions, no weights).  A token longer than
  :data:`LONG_WORD` characters is held as its first :data:`LONG_WORD` and a ``~`` (no token
  has a ``~``): a plain word (up to that length) never matches it, a prefix (up to that
  length) matches it exactly when it prefixes the whole token, and a longer word or prefix
  looks it up by that key and leaves the rest to the exact check
  (bastion.store.ftsquery).  So the index is sound for every query: a line holding a word
  has its lexeme, whatever its length or the line's.
* ``bastion_fts_exact(line, program)``: whether the line matches, given ``program``
  (bastion.store.ftsquery.fts5_to_match's exact part): ``boolean;leaf;leaf...``.  Each leaf
  is a form that needs positions, decided on the tokens by ``bastion_fts_leaf``; the
  boolean is a tsquery over the line's words and a marker ``~k`` for each leaf ``k`` that
  holds (``'restart' & !'~1'``), evaluated by tsquery itself; a program of one leaf
  (``'~1';...``) is that leaf.
* a leaf ``^:a b*`` (FTS5's ``^"a b"*``): the phrase starts at token 1.  A leaf
  ``N:a b,c*,d`` (``NEAR("a b" c* d, N)``; one phrase: a phrase anywhere): each phrase's
  starts (``bastion_fts_starts``: ``array_positions`` of its first word, or a scan for a
  prefix, then its other words compared in place), then FTS5's rule
  (fts5ExprNearIsMatch): some start ``m`` of a phrase, with every other phrase ``i``
  (``n_i`` words) starting at or before ``m`` and at ``m - n_i - N`` or after.  For each
  phrase as the last to start, one pass over its starts moves a pointer in each other
  phrase's (sorted) starts: time in the number of occurrences times the phrases squared,
  whatever N (no arrangement is enumerated).

A word in a program is letters and digits (a prefix ends in ``*``), so ``;``, ``:``, ``,``,
``*`` and ``~`` never occur in one.
"""

from __future__ import annotations

LONG_WORD = 500          # characters a lexeme keeps of a token (2,000 bytes at most, < 2,047)

MIGRATION_13 = f"""
    -- tokens as lexemes: one longer than {LONG_WORD} characters is its first {LONG_WORD} and '~'
    CREATE OR REPLACE FUNCTION bastion_fts_lexemes(tok text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
        SELECT ARRAY(SELECT CASE WHEN length(w) > {LONG_WORD} THEN left(w, {LONG_WORD}) || '~'
                            ELSE w END FROM unnest(tok) w)
    $f$;
    CREATE OR REPLACE FUNCTION bastion_fts_vector(line text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            t text := btrim(bastion_fts_text(line));
        BEGIN
            IF length(t) > {LONG_WORD} THEN
                RETURN array_to_tsvector(bastion_fts_lexemes(string_to_array(t, ' ')));
            END IF;
            RETURN array_to_tsvector(string_to_array(t, ' '));
        END
    $f$;
    -- where the phrase (its words, a prefix ending in '*') starts in tok, ascending
    CREATE OR REPLACE FUNCTION bastion_fts_starts(tok text[], terms text[]) RETURNS int[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            n int := cardinality(terms);
            last int := cardinality(tok) - n + 1;
            head text := terms[1];
            cand int[] := '{{}}';
            found int[] := '{{}}';
            term text;
            p int;
            k int;
        BEGIN
            IF right(head, 1) = '*' THEN
                head := left(head, -1);
                FOR p IN 1 .. last LOOP
                    IF starts_with(tok[p], head) THEN
                        cand := cand || p;
                    END IF;
                END LOOP;
            ELSE
                cand := array_positions(tok, head);
            END IF;
            IF n = 1 THEN
                RETURN cand;
            END IF;
            FOREACH p IN ARRAY cand LOOP
                EXIT WHEN p > last;
                k := 2;
                WHILE k <= n LOOP
                    term := terms[k];
                    IF right(term, 1) = '*' THEN
                        EXIT WHEN NOT starts_with(tok[p + k - 1], left(term, -1));
                    ELSE
                        EXIT WHEN tok[p + k - 1] <> term;
                    END IF;
                    k := k + 1;
                END LOOP;
                IF k > n THEN
                    found := found || p;
                END IF;
            END LOOP;
            RETURN found;
        END
    $f$;
    -- one leaf of a program: '^:phrase' or 'N:phrase,phrase,...'
    CREATE OR REPLACE FUNCTION bastion_fts_leaf(tok text[], spec text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            head text := split_part(spec, ':', 1);
            phrases text[] := string_to_array(substr(spec, length(head) + 2), ',');
            np int := cardinality(phrases);
            starts int[] := '{{}}';       -- every phrase's starts, one phrase after another
            off int[] := '{{}}';          -- phrase i's are starts[off[i] .. off[i + 1] - 1]
            len int[] := '{{}}';          -- phrase i's number of words
            ptr int[];
            s int[];
            terms text[];
            dist int;
            m int;
            p int;
            ok boolean;
        BEGIN
            IF head = '^' THEN
                s := bastion_fts_starts(tok, string_to_array(phrases[1], ' '));
                RETURN coalesce(s[1] = 1, false);
            END IF;
            FOR i IN 1 .. np LOOP
                terms := string_to_array(phrases[i], ' ');
                s := bastion_fts_starts(tok, terms);
                IF cardinality(s) = 0 THEN
                    RETURN false;
                END IF;
                off := off || (cardinality(starts) + 1);
                starts := starts || s;
                len := len || cardinality(terms);
            END LOOP;
            IF np = 1 THEN
                RETURN true;
            END IF;
            off := off || (cardinality(starts) + 1);
            dist := head::int;
            FOR j IN 1 .. np LOOP                 -- phrase j starts last, at m
                ptr := off[1:np];
                FOR a IN off[j] .. off[j + 1] - 1 LOOP
                    m := starts[a];
                    ok := true;
                    FOR i IN 1 .. np LOOP
                        CONTINUE WHEN i = j;
                        p := ptr[i];              -- phrase i's last start at or before m
                        WHILE p + 1 < off[i + 1] AND starts[p + 1] <= m LOOP
                            p := p + 1;
                        END LOOP;
                        ptr[i] := p;
                        IF starts[p] > m OR starts[p] < m - len[i] - dist THEN
                            ok := false;
                            EXIT;
                        END IF;
                    END LOOP;
                    IF ok THEN
                        RETURN true;
                    END IF;
                END LOOP;
            END LOOP;
            RETURN false;
        END
    $f$;
    DROP FUNCTION IF EXISTS bastion_fts_exact(tsvector, tsquery);
    -- the exact check, on the lines the index found: plpgsql, so never an index condition
    CREATE OR REPLACE FUNCTION bastion_fts_exact(line text, program text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            t text := btrim(bastion_fts_text(line));
            tok text[] := string_to_array(t, ' ');
            part text[] := string_to_array(program, ';');
            held text[] := '{{}}';
        BEGIN
            IF part[1] = '''~1''' THEN
                RETURN bastion_fts_leaf(tok, part[2]);
            END IF;
            FOR k IN 2 .. cardinality(part) LOOP
                IF bastion_fts_leaf(tok, part[k]) THEN
                    held := held || ('~' || (k - 1));
                END IF;
            END LOOP;
            IF length(t) > {LONG_WORD} THEN
                tok := bastion_fts_lexemes(tok);
            END IF;
            RETURN array_to_tsvector(tok || held) @@ part[1]::tsquery;
        END
    $f$;
    DROP VIEW commands_fts;
    CREATE VIEW commands_fts AS
        SELECT id AS rowid, bastion_fts_vector(line) AS tsv, line FROM commands;
    REINDEX INDEX commands_tsv;
"""
