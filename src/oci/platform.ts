/**
 * Platforms: parse `os/arch[/variant]`, the host's default, and pick an index entry for a platform.
 *
 * Matching follows containerd's platforms package: names are normalized first (x86_64 → amd64,
 * aarch64 → arm64, armhf → arm/v7 …), an absent variant means the architecture's default (arm64 → v8,
 * arm → v7, amd64 → v1), and a wanted platform also accepts older compatible variants, best first
 * (arm/v7 takes v6 then v5; amd64/v3 takes v2 then v1; arm64 takes arm/v7…v5; amd64 takes 386) —
 * containerd's `platforms.Only`.
 *
 * Not here: fetching indexes (client.ts).
 */
import { StarlightError } from '../errors.js';
import type { Descriptor, Platform } from './types.js';

/** Default variant per architecture when a platform names none (containerd's normalization). */
const DEFAULT_VARIANT: Record<string, string> = { arm64: 'v8', arm: 'v7', amd64: 'v1' };

/** Node's process.arch → OCI/GOARCH architecture names. */
const NODE_ARCH: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

function normalizeArch(arch: string, variant: string | undefined): { architecture: string; variant?: string } {
  const a = arch.toLowerCase();
  const v = variant?.toLowerCase();
  switch (a) {
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return { architecture: 'amd64', variant: v === undefined || v === '' ? undefined : v };
    case 'i386':
    case '386':
      return { architecture: '386' };
    case 'aarch64':
    case 'arm64':
      if (v === '8' || v === 'v8' || v === 'v8.0') return { architecture: 'arm64', variant: 'v8' };
      if (v === '9' || v === '9.0' || v === 'v9.0') return { architecture: 'arm64', variant: 'v9' };
      return { architecture: 'arm64', variant: v || undefined };
    case 'armhf':
      return { architecture: 'arm', variant: 'v7' };
    case 'armel':
      return { architecture: 'arm', variant: 'v6' };
    case 'arm':
      if (v && /^[5-8]$/.test(v)) return { architecture: 'arm', variant: `v${v}` };
      return { architecture: 'arm', variant: v || undefined };
    default:
      return { architecture: a, variant: v || undefined };
  }
}

/** Lower-cased, canonical names; the variant stays absent if absent (see `effectiveVariant`). */
export function normalizePlatform(p: Platform): Platform {
  const { architecture, variant } = normalizeArch(p.architecture, p.variant);
  const out: Platform = { os: p.os.toLowerCase(), architecture };
  if (variant !== undefined) out.variant = variant;
  return out;
}

function effectiveVariant(p: Platform): string {
  return p.variant ?? DEFAULT_VARIANT[p.architecture] ?? '';
}

/** Parses 'linux/amd64', 'linux/arm64/v8'; an 'os' alone means that os on the host's architecture. */
export function parsePlatform(s: string): Platform {
  const parts = s.split('/');
  const ok = parts.length >= 1 && parts.length <= 3 && parts.every((p) => /^[A-Za-z0-9_.-]+$/.test(p));
  if (!ok) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `invalid platform "${s}": use os/arch[/variant], e.g. linux/amd64`, {
      details: { platform: s },
    });
  }
  if (parts.length === 1) return { ...hostPlatform(), os: parts[0].toLowerCase() };
  return normalizePlatform({ os: parts[0], architecture: parts[1], variant: parts[2] });
}

/** 'os/arch[/variant]' */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** The platform of this process (process.platform / process.arch mapped to OCI names). */
export function hostPlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  const p: Platform = { os: process.platform === 'win32' ? 'windows' : process.platform, architecture };
  if (architecture === 'arm') {
    const armVersion = (process.config.variables as Record<string, unknown>).arm_version;
    if (armVersion !== undefined) p.variant = `v${String(armVersion)}`;
  }
  return normalizePlatform(p);
}

/** True if `have` is exactly `want` after normalization (default variants filled in). */
export function platformEquals(want: Platform, have: Platform): boolean {
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  return w.os === h.os && w.architecture === h.architecture && effectiveVariant(w) === effectiveVariant(h);
}

/** The platforms `want` can run, best first (containerd's platformVector). */
function compatiblePlatforms(want: Platform): Platform[] {
  const w = normalizePlatform(want);
  const out: Platform[] = [w];
  const version = Number.parseInt(effectiveVariant(w).replace(/^v/, ''), 10);
  const downTo = (arch: string, from: number, min: number): void => {
    for (let v = from; v >= min; v--) out.push({ os: w.os, architecture: arch, variant: `v${v}` });
  };
  switch (w.architecture) {
    case 'amd64':
      if (version > 1) downTo('amd64', version - 1, 1);
      out.push({ os: w.os, architecture: '386' });
      break;
    case 'arm':
      if (version > 5) downTo('arm', version - 1, 5);
      break;
    case 'arm64':
      if (version === 8 || Number.isNaN(version)) downTo('arm', 7, 5);
      break;
  }
  return out;
}

/**
 * Picks the index entry for `want`: the best-ranked compatible platform wins; among equals, the first
 * listed (as containerd). Entries without a platform (e.g. attestations) never match.
 */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  const ranks = compatiblePlatforms(want);
  let best: { desc: Descriptor; rank: number } | undefined;
  for (const desc of manifests) {
    if (!desc.platform) continue;
    const have = desc.platform;
    const rank = ranks.findIndex((r) => platformEquals(r, have));
    if (rank >= 0 && (best === undefined || rank < best.rank)) best = { desc, rank };
  }
  return best?.desc;
}
