/**
 * `starlight notify REF --proxy URL [--platform P] [--token-file F]`: asks a proxy to index an image
 * ahead of the first pull (POST /v1/notify). Prints the proxy's JSON answer.
 */
import { readFileSync } from 'node:fs';
import { CODES, StarlightError, type Code } from '../errors.js';
import { parseTokenFile } from '../proxy/config.js';

export async function runNotifyCommand(argv: string[]): Promise<number> {
  let ref: string | undefined;
  let proxy = process.env.STARLIGHT_PROXY_URL;
  let platform: string | undefined;
  let tokenFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `option ${a} needs a value`);
      return v;
    };
    if (a === '--proxy') proxy = val();
    else if (a === '--platform') platform = val();
    else if (a === '--token-file') tokenFile = val();
    else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: starlight notify REF --proxy URL [--platform os/arch] [--token-file F]\n');
      return 0;
    } else if (!a.startsWith('-') && ref === undefined) ref = a;
    else throw new StarlightError('SL_ERR_INVALID_ARGUMENT', `unexpected argument ${a}`);
  }
  if (ref === undefined || proxy === undefined) {
    throw new StarlightError('SL_ERR_INVALID_ARGUMENT', 'usage: starlight notify REF --proxy URL');
  }
  const url = new URL('/v1/notify', proxy);
  url.searchParams.set('ref', ref);
  if (platform !== undefined) url.searchParams.set('platform', platform);
  const headers: Record<string, string> = {};
  if (tokenFile !== undefined) headers.authorization = `Bearer ${parseTokenFile(readFileSync(tokenFile, 'utf8'), tokenFile)[0]}`;
  let res: Response;
  try {
    res = await fetch(url, { method: 'POST', headers });
  } catch (err) {
    throw new StarlightError('SL_ERR_OCI_UNREACHABLE', `cannot reach proxy ${proxy}`, { cause: err, details: { proxy } });
  }
  const text = await res.text();
  if (!res.ok) {
    let e: { code?: string; message?: string; detail?: Record<string, unknown> } = {};
    try {
      e = (JSON.parse(text) as { errors: (typeof e)[] }).errors[0] ?? {};
    } catch {
      /* not JSON: fall through */
    }
    const code: Code = e.code !== undefined && e.code in CODES ? (e.code as Code) : 'SL_ERR_OCI_REGISTRY';
    throw new StarlightError(code, `proxy ${proxy} answered ${res.status}: ${e.message ?? text.slice(0, 200)}`, { details: e.detail ?? {} });
  }
  process.stdout.write(text + '\n');
  return 0;
}
