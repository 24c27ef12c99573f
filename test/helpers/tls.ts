/** Test certificates (openssl, from install-deps): a self-signed pair for 127.0.0.1, valid one day. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/** Writes `<name>-cert.pem` and `<name>-key.pem` into `dir`; returns their paths. */
export function selfSignedCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}
