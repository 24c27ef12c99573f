/**
 * `starlight notify REF --proxy URL [--platform P] [--token-file F]`: asks a proxy to index an image
 * ahead of the first pull (POST /v1/notify). Prints the proxy's JSON answer.
 */
import { readFileSync } from 'node:fs';
import { StarlightError } from '../errors.js';
import { parseTokenFile } from '../proxy/config.js';
import { ProxyClient } from '../worker/stream/proxy-client.js';

/** How long to wait for the proxy to finish indexing, ms (10 min). */
const NOTIFY_TIMEOUT_MS = 600_000;

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
  const token = tokenFile !== undefined ? parseTokenFile(readFileSync(tokenFile, 'utf8'), tokenFile)[0] : undefined;
  // The proxy answers once the image is indexed: minutes for a large cold image.
  const client = new ProxyClient({ url: proxy, token, headersTimeoutMs: NOTIFY_TIMEOUT_MS });
  try {
    const answer = await client.requestJson('POST', '/v1/notify', { ref, platform });
    process.stdout.write(JSON.stringify(answer) + '\n');
  } finally {
    client.close();
  }
  return 0;
}
