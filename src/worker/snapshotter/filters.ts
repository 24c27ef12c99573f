/**
 * Pure: containerd filter expressions (the `filters` package syntax) for Walk/List, over snapshot Info.
 *
 * Supported: `field`, `field==v`, `field!=v`, `field~=regex`; fields `name`, `parent`, `kind`
 * (`active|view|committed`) and `labels.<key>` where key may be a double-quoted string
 * (`labels."containerd.io/snapshot.ref"==sha256:…`); values bare (up to the next comma) or
 * double-quoted with backslash escapes. Commas AND selectors inside one filter; several filters OR.
 * That covers what containerd itself sends (core/metadata/snapshot.go after AlreadyExists) and `ctr`.
 *
 * Not here: anything else from containerd's filter grammar (`|`-alternatives, `/regex/` literals);
 * those are rejected as invalid-argument rather than silently matching everything.
 */
import { StarlightError } from '../../errors.js';
import type { Info } from './types.js';

type Op = '==' | '!=' | '~=' | 'present';

interface Selector {
  path: string[];
  op: Op;
  value: string;
  regex?: RegExp;
}

/** One filter string: a conjunction of selectors. */
export type Filter = Selector[];

function invalid(filter: string, why: string): StarlightError {
  return new StarlightError('SL_ERR_SNAPSHOT_INVALID', `invalid filter ${JSON.stringify(filter)}: ${why}`, {
    details: { filter },
  });
}

/** Reads a double-quoted string starting at s[i] === '"'; returns [value, index after the quote]. */
function readQuoted(s: string, i: number, filter: string): [string, number] {
  let out = '';
  for (let j = i + 1; j < s.length; j++) {
    const c = s[j]!;
    if (c === '\\') {
      const n = s[++j];
      if (n === undefined) break;
      out += n === 'n' ? '\n' : n === 't' ? '\t' : n;
    } else if (c === '"') {
      return [out, j + 1];
    } else {
      out += c;
    }
  }
  throw invalid(filter, 'unterminated quoted string');
}

const FIELD_CHAR = /[A-Za-z0-9_\-]/;

function parseOne(filter: string): Filter {
  const selectors: Filter = [];
  let i = 0;
  const s = filter;
  while (i < s.length) {
    const path: string[] = [];
    for (;;) {
      if (s[i] === '"') {
        const [v, next] = readQuoted(s, i, filter);
        path.push(v);
        i = next;
      } else {
        let j = i;
        while (j < s.length && FIELD_CHAR.test(s[j]!)) j++;
        if (j === i) throw invalid(filter, `expected a field name at offset ${i}`);
        path.push(s.slice(i, j));
        i = j;
      }
      if (s[i] !== '.') break;
      i++;
    }
    const opText = s.slice(i, i + 2);
    let op: Op = 'present';
    let value = '';
    if (opText === '==' || opText === '!=' || opText === '~=') {
      op = opText;
      i += 2;
      if (s[i] === '"') {
        [value, i] = readQuoted(s, i, filter);
      } else {
        const end = s.indexOf(',', i);
        value = s.slice(i, end < 0 ? s.length : end);
        i = end < 0 ? s.length : end;
      }
    }
    const sel: Selector = { path, op, value };
    if (op === '~=') {
      try {
        sel.regex = new RegExp(value);
      } catch {
        throw invalid(filter, `bad regular expression ${JSON.stringify(value)}`);
      }
    }
    selectors.push(sel);
    if (i < s.length) {
      if (s[i] !== ',') throw invalid(filter, `unexpected ${JSON.stringify(s[i])} at offset ${i}`);
      i++;
      if (i === s.length) throw invalid(filter, 'a selector must follow the last comma');
    }
  }
  return selectors;
}

/** Parses filter strings; an empty list (or only empty strings) matches everything. */
export function parseFilters(filters: readonly string[]): Filter[] {
  return filters.filter((f) => f.trim() !== '').map((f) => parseOne(f.trim()));
}

/**
 * The field value of an Info, as containerd's adaptSnapshot (storage/bolt.go); undefined = absent.
 * Like containerd's selector.Match, `!=` and `~=` compare an absent field as ''.
 */
function fieldOf(info: Info, path: string[]): string | undefined {
  switch (path[0]) {
    case 'kind':
      return info.kind;
    case 'name':
      return info.name;
    case 'parent':
      return info.parent;
    case 'labels': {
      const key = path.slice(1).join('.');
      return Object.prototype.hasOwnProperty.call(info.labels, key) ? info.labels[key] : undefined;
    }
    default:
      return undefined;
  }
}

function matchSelector(info: Info, sel: Selector): boolean {
  const v = fieldOf(info, sel.path);
  switch (sel.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v !== undefined && v === sel.value;
    case '!=':
      return (v ?? '') !== sel.value;
    case '~=':
      return sel.regex!.test(v ?? '');
  }
}

/** True if `info` matches any filter (or there are none). */
export function matchesAny(info: Info, filters: readonly Filter[]): boolean {
  if (filters.length === 0) return true;
  return filters.some((f) => f.every((sel) => matchSelector(info, sel)));
}
