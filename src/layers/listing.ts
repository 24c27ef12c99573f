/**
 * A `tar -tv`-like one-line rendering of a TOC entry, for `starlight image toc` and test failures.
 *
 *   drwxr-xr-x 0/0            0 2024-01-02 03:04 etc (opaque)
 *   -rw-r--r-- 1000/1000     12 2024-01-02 03:04 etc/hostname  sha256:ab12…
 *   lrwxrwxrwx 0/0            0 2024-01-02 03:04 lib -> usr/lib
 *   hrw-r--r-- 0/0           12 2024-01-02 03:04 bin/ls link to bin/sh
 *   crw-rw-rw- 0/0         1,3 2024-01-02 03:04 dev/null
 *   w--------- 0/0            0 1970-01-01 00:00 var/log/old.log (whiteout)
 *
 * Times are UTC. The root is shown as '.'. Not here: choosing or sorting entries (the caller).
 */
import type { EntryType, TocEntry } from './toc.js';

const TYPE_CHAR: Record<EntryType, string> = {
  reg: '-',
  dir: 'd',
  symlink: 'l',
  hardlink: 'h',
  char: 'c',
  block: 'b',
  fifo: 'p',
  whiteout: 'w',
};
/** Width of the size column (GNU tar pads similarly). */
const SIZE_WIDTH = 12;
/** Hex digits of the digest shown (full digests make lines too long to scan). */
const DIGEST_CHARS = 12;

function permString(mode: number): string {
  const rwx = (bits: number, special: boolean, specialChar: string) => {
    const x = bits & 1 ? specialChar.toLowerCase() : specialChar;
    return (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? x : bits & 1 ? 'x' : '-');
  };
  return (
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 'S') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 'S') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 'T')
  );
}

function timeString(mtime: number): string {
  const d = new Date(Math.floor(mtime) * 1000);
  return Number.isNaN(d.getTime()) ? '????-??-?? ??:??' : d.toISOString().slice(0, 16).replace('T', ' ');
}

export function formatTocLine(e: TocEntry): string {
  const size = e.type === 'char' || e.type === 'block' ? `${e.devmajor ?? 0},${e.devminor ?? 0}` : String(e.size);
  let line = `${TYPE_CHAR[e.type]}${permString(e.mode)} ${`${e.uid}/${e.gid}`.padEnd(9)} ${size.padStart(SIZE_WIDTH)} ${timeString(e.mtime)} ${e.path === '' ? '.' : e.path}`;
  if (e.type === 'symlink') line += ` -> ${e.linkname ?? ''}`;
  if (e.type === 'hardlink') line += ` link to ${e.linkname ?? ''}`;
  if (e.type === 'whiteout') line += ' (whiteout)';
  if (e.opaque) line += ' (opaque)';
  if (e.implied) line += ' (implied)';
  if (e.digest && e.type !== 'hardlink') line += `  ${e.digest.slice(0, 7 + DIGEST_CHARS)}`;
  if (e.xattrs) line += `  xattrs=${Object.keys(e.xattrs).sort().join(',')}`;
  return line;
}
