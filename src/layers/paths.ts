/**
 * Normalization of tar entry names into TOC paths, and the one path order of the project.
 *
 * Rules (what containerd's archive/tar.go `applyNaive` does, except that we refuse instead of clamp):
 * - a leading '/' is stripped: containerd joins every name onto the extraction root (`/etc/x` → `etc/x`);
 * - '.' and empty components vanish ('./a//b/' → 'a/b'); the root itself is '';
 * - '..' is resolved lexically ('a/../b' → 'b'). A '..' that would climb above the root is REFUSED
 *   with SL_ERR_IMAGE_PATH_ESCAPE. containerd clamps it at the root (fs.RootPath, chroot-like); a layer
 *   doing that is malformed or hostile, and refusing is the safer, louder choice.
 * Hardlink targets go through the same rules (containerd's hardlinkRootPath bounds them the same way).
 * Symlink targets are NOT normalized: they are data, resolved by the kernel inside the container root.
 *
 * Not here: symlink resolution of parent components (containerd follows symlinked parents when it
 * extracts; a TOC is lexical), whiteout handling (indexer.ts).
 */
import { StarlightError } from '../errors.js';

/** Where a name came from, for error messages. */
export interface PathContext {
  /** Layer digest or diffID, if known. */
  layer?: string;
  /** What the name is: 'entry' (the tar name) or 'hardlink target'. */
  what?: string;
}

/**
 * Normalizes a tar name (or hardlink target) to a TOC path. Throws SL_ERR_IMAGE_PATH_ESCAPE when a
 * '..' component climbs above the root, naming the raw entry and the layer.
 */
export function normalizeTarPath(name: string, ctx: PathContext = {}): string {
  // Fast path: the common already-clean relative name.
  if (name.length > 0 && !name.includes('//') && !/(^|\/)\.\.?(\/|$)/.test(name) && name[0] !== '/' && !name.endsWith('/')) {
    return name;
  }
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) {
        const layer = ctx.layer ? ` in layer ${ctx.layer}` : '';
        throw new StarlightError(
          'SL_ERR_IMAGE_PATH_ESCAPE',
          `tar ${ctx.what ?? 'entry'} ${JSON.stringify(name)}${layer} escapes the image root with '..'; the layer is refused`,
          { details: { path: name, layer: ctx.layer } },
        );
      }
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out.join('/');
}

/** Parent path of a normalized path ('' for top-level entries and for the root itself). */
export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

/** Last component of a normalized path. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Joins a normalized directory path and a name. */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/**
 * THE path order: byte order of the UTF-8 encodings ('' first, a parent before its descendants, but
 * 'a-b' < 'a/b' < 'a0' because '-' (0x2d) < '/' (0x2f) < '0'). Equal to code point order, which JS's
 * UTF-16 `<` gets wrong only for astral characters vs U+E000..U+FFFF; fixed here without allocating.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (astral code points) sort after U+E000..U+FFFF in code point order.
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}
