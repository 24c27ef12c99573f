/** Every bench mode by name, in the default order of bars and table rows. */
import { downloadMode } from './download.js';
import { estargzMode } from './estargz.js';
import { overlayfsMode } from './overlayfs.js';
import { starlightColdMode, starlightMode, starlightPriorMode, starlightTracedMode, starlightViewMode } from './starlight.js';
import type { ModeDefinition } from './types.js';

export const MODES: readonly ModeDefinition[] = [overlayfsMode, estargzMode, starlightMode, starlightViewMode, starlightColdMode, starlightPriorMode, starlightTracedMode, downloadMode];

export function modeByName(name: string): ModeDefinition | undefined {
  return MODES.find((m) => m.name === name);
}
