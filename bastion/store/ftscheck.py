"""The PostgreSQL side of full-text search's exact check: migration 13's SQL (plpgsql).

tsvector cannot hold a line exactly: positions stop at 16383, a lexeme keeps 255 of them,
a word of 2,047 bytes or more is dropped (and the words after it move up one position),
and ``array_to_tsvector`` silently mangles one that long (its length field is 11 bits).
So from migration 13 the index holds no positions, only each line's set of words, and all
that needs positions is decided on the line's own tokens:

* ``bastion_fts_spaced(line)``: ``bastion_fts_text(line)`` (migration 8: runs of letters
  and digits, lower case, diacritics removed, as SQLite's unicode61 tokenizer splits a
  line) with one space before, between and after its tokens (``' sudo rm rf '``); an ASCII
  line (as many bytes as characters) has no diacritics and skips the two ``normalize``
  calls (the same text, about 3 us a line instead of 7).  ``bastion_fts_tokens(line)``:
  its tokens as an array, position ``p`` at element ``p``.
* ``bastion_fts_vector(line)`` (the GIN index's expression; view ``commands_fts.tsv``): the
  set of its tokens (``array_to_tsvector``: no positions, no weights).  A token longer than
  :data:`LONG_WORD` characters is held as its first :data:`LONG_WORD` and a ``~`` (no token
  has a ``~``): a plain word (up to that length) never matches that key, a prefix (up to
  that length) matches it exactly when it prefixes the whole token, and a longer word or
  prefix looks it up by the key and leaves the rest to the exact check
  (bastion.store.ftsquery).  So the index is sound for every query: a line holding a word
  has its lexeme, whatever the word's length or the line's.
* ``bastion_fts_exact(line, program)``: whether the line matches ``program``
  (bastion.store.ftsquery.fts5_to_match's exact part): ``boolean;leaf;leaf...``.  Each leaf
  is a form that needs positions, decided on the tokens; the boolean is the whole query as
  a tsquery over the line's words and a marker ``~k`` for each leaf ``k`` that holds
  (``'restart' & !'~1'``), evaluated by tsquery itself; a program of one leaf (``'~1';...``)
  is that leaf's answer.  The view's ``line`` column is there for it.
* a leaf ``^:a b*`` (FTS5's ``^"a b"*``): the phrase starts at token 1; ``0:a b`` (one
  phrase): it is somewhere.  With at most its last word a prefix, that is a string search
  in the spaced line (``' a b '``, or ``' a b'`` for ``b*``, which can only match at a
  token's start), with no array.  A leaf ``N:a b,c*,d`` (``NEAR("a b" c* d, N)``; or a
  phrase with an earlier prefix): the line's tokens, each phrase's starts (a one-word phrase: ``array_positions``; else ``bastion_fts_starts``: the
  first word's positions, or a scan for a prefix, then its other words compared in place),
  then FTS5's rule (fts5ExprNearIsMatch): some start ``m`` of a phrase, with every other
  phrase ``i`` (``n_i`` words) starting at or before ``m`` and at ``m - n_i - N`` or after.
  For each phrase as the one that starts last, one pass over its starts moves a pointer
  through each other phrase's (ascending) starts: time in the occurrences times the number
  of phrases, whatever N; no arrangement is listed.

A word in a program is letters and digits (a prefix ends in ``*``), so ``;``, ``:``, ``,``,
``*`` and ``~`` never occur in one.  Measured: bench/fts_near.py, docs/SCALING.md.
"""

from __future__ import annotations

LONG_WORD = 500          # characters a lexeme keeps of a token (2,000 bytes at most, < 2,047)
# the functions migration 13 adds (and migration 11's exact check, which it drops)
FUNCTIONS = ("bastion_fts_spaced(text)", "bastion_fts_tokens(text)", "bastion_fts_lexemes(text[])",
             "bastion_fts_starts(text[], text[])", "bastion_fts_exact(text, text)",
             "bastion_fts_exact(tsvector, tsquery)")

MIGRATION_13 = f"""
    -- the line's tokens between single spaces, one before the first and one after the
    -- last (' a b c '); an ASCII line skips the folding of diacritics (bastion_fts_text's
    -- normalize calls: a third of its time)
    CREATE OR REPLACE FUNCTION bastion_fts_spaced(line text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
        SELECT ' ' || btrim(CASE WHEN octet_length(line) = length(line)
            THEN lower(regexp_replace(line, '[^[:alnum:]]+', ' ', 'g'))
            ELSE bastion_fts_text(line) END) || ' '
    $f$;
    -- the line's tokens, position p at element p
    CREATE OR REPLACE FUNCTION bastion_fts_tokens(line text) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
        SELECT string_to_array(btrim(bastion_fts_spaced(line)), ' ')
    $f$;
    -- tokens as lexemes: one longer than {LONG_WORD} characters is its first {LONG_WORD} and '~'
    CREATE OR REPLACE FUNCTION bastion_fts_lexemes(tok text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
        SELECT ARRAY(SELECT CASE WHEN length(w) > {LONG_WORD} THEN left(w, {LONG_WORD}) || '~'
                            ELSE w END FROM unnest(tok) w)
    $f$;
    CREATE OR REPLACE FUNCTION bastion_fts_vector(line text) RETURNS tsvector
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            tok text[] := bastion_fts_tokens(line);
        BEGIN
            -- a margin: folding may leave a word longer than it is in the line (a
            -- decomposition NFC does not undo, an ICU lower())
            IF length(line) > {LONG_WORD} / 2 THEN
                tok := bastion_fts_lexemes(tok);
            END IF;
            RETURN array_to_tsvector(tok);
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
    DROP FUNCTION IF EXISTS bastion_fts_exact(tsvector, tsquery);
    -- the exact check, on the lines the index found: plpgsql, so never an index condition.
    -- Each leaf ('^:phrase' or 'N:phrase,phrase,...') in turn, inline (a call costs ~1 us)
    CREATE OR REPLACE FUNCTION bastion_fts_exact(line text, program text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $f$
        DECLARE
            spaced text := bastion_fts_spaced(line);
            tok text[];                   -- its tokens, split when a leaf needs them
            part text[] := string_to_array(program, ';');
            held text[] := '{{}}';        -- the markers of the leaves that hold
            head text;
            body text;
            phrases text[];
            np int;
            starts int[];                 -- every phrase's starts, one phrase after another
            off int[];                    -- phrase i's are starts[off[i] .. off[i + 1] - 1]
            len int[];                    -- phrase i's number of words
            ptr int[];
            s int[];
            terms text[];
            dist bigint;
            m int;
            p int;
            ok boolean;
            hit boolean;
        BEGIN
            FOR k IN 2 .. cardinality(part) LOOP
                head := split_part(part[k], ':', 1);
                body := substr(part[k], length(head) + 2);
                hit := false;
                <<leaf>>
                BEGIN
                    -- one phrase, a prefix at most at its end: ' a b ' (' a b' for b*) is
                    -- in the spaced line, or starts it for ^
                    IF (head = '^' OR strpos(body, ',') = 0)
                            AND strpos(body, '*') IN (0, length(body)) THEN
                        body := ' ' || rtrim(body, '*') || CASE WHEN right(body, 1) = '*'
                                                               THEN '' ELSE ' ' END;
                        hit := CASE WHEN head = '^' THEN starts_with(spaced, body)
                                    ELSE strpos(spaced, body) > 0 END;
                        EXIT leaf;
                    END IF;
                    IF tok IS NULL THEN
                        tok := string_to_array(btrim(spaced), ' ');
                    END IF;
                    phrases := string_to_array(body, ',');
                    np := cardinality(phrases);
                    IF head = '^' THEN
                        s := bastion_fts_starts(tok, string_to_array(phrases[1], ' '));
                        hit := coalesce(s[1] = 1, false);
                        EXIT leaf;
                    END IF;
                    starts := '{{}}';
                    off := '{{}}';
                    len := '{{}}';
                    FOR i IN 1 .. np LOOP
                        terms := string_to_array(phrases[i], ' ');
                        IF cardinality(terms) = 1 AND right(terms[1], 1) <> '*' THEN
                            s := array_positions(tok, terms[1]);
                        ELSE
                            s := bastion_fts_starts(tok, terms);
                        END IF;
                        EXIT leaf WHEN cardinality(s) = 0;
                        off := off || (cardinality(starts) + 1);
                        starts := starts || s;
                        len := len || cardinality(terms);
                    END LOOP;
                    hit := np = 1;
                    EXIT leaf WHEN hit;
                    off := off || (cardinality(starts) + 1);
                    dist := head::bigint;
                    FOR j IN 1 .. np LOOP             -- phrase j starts last, at m
                        ptr := off[1:np];
                        FOR a IN off[j] .. off[j + 1] - 1 LOOP
                            m := starts[a];
                            ok := true;
                            FOR i IN 1 .. np LOOP
                                CONTINUE WHEN i = j;
                                p := ptr[i];          -- phrase i's last start at or before m
                                WHILE p + 1 < off[i + 1] AND starts[p + 1] <= m LOOP
                                    p := p + 1;
                                END LOOP;
                                ptr[i] := p;
                                IF starts[p] > m OR starts[p] < m - len[i] - dist THEN
                                    ok := false;
                                    EXIT;
                                END IF;
                            END LOOP;
                            hit := ok;
                            EXIT leaf WHEN hit;
                        END LOOP;
                    END LOOP;
                END leaf;
                IF part[1] = '''~1''' THEN        -- the program is this one leaf
                    RETURN hit;
                END IF;
                IF hit THEN
                    held := held || ('~' || (k - 1));
                END IF;
            END LOOP;
            tok := string_to_array(btrim(spaced), ' ');
            IF length(line) > {LONG_WORD} / 2 THEN
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
