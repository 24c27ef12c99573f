/**
 * Where node-gyp put the package's native builds (binding.gyp): the first `build/Release/<name>` above
 * this module, which runs from src/ (ts-node, tests) or dist/src/ (the package).
 *
 * Not here: checking an addon's exports (src/worker/fs/native.ts, src/socket-options.ts).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** How many directories above this module to look for the package root. */
const MAX_PARENT_LEVELS = 6;

/** Where findBuildArtifact starts looking (this module's directory), for error messages. */
export const BUILD_SEARCH_START = dirname(fileURLToPath(import.meta.url));

/** Absolute path of `build/Release/<name>`, or null when no directory above this module has it. */
export function findBuildArtifact(name: string): string | null {
  let dir = BUILD_SEARCH_START;
  for (let i = 0; i < MAX_PARENT_LEVELS; i++) {
    const candidate = join(dir, 'build', 'Release', name);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

/**
 * Loads the optional addon `build/Release/<name>`: its exports, or null when it was not built or does
 * not load here (callers then take their portable path).
 */
export function loadOptionalAddon<T>(name: string): T | null {
  const path = findBuildArtifact(name);
  try {
    return path === null ? null : (createRequire(import.meta.url)(path) as T);
  } catch {
    return null;
  }
}
