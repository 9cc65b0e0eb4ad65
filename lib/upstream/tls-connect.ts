/**
 * TLS to upstream endpoints, through undici's own connector (its sockets, timeouts and session
 * cache). `tls: mesh` presents this workload's certificate and checks the server's SPIFFE ID
 * against the identity the upstream is expected to have — not its host name, which in a mesh
 * says nothing about who answers. The certificate is read at each new connection, so a
 * rotation applies to new connections while open ones keep theirs.
 */
import { isIP } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import type { buildConnector as BuildConnector } from 'undici';
import { buildConnector } from '../core/undici.js';
import { compileIdentityPattern, spiffeIdOfSubjectAltName } from '../identity/spiffe.js';
import type { IdentityMaterial, WorkloadIdentity } from '../identity/workload-identity.js';
import type { UpstreamTls } from '../policy/types.js';

type Connector = BuildConnector.connector;

/** The connector of a TLS upstream (null for plaintext: undici's default). */
export function tlsConnector(tls: UpstreamTls, identity: WorkloadIdentity | null, host: string, connectTimeoutMs: number): Connector | null {
  if (tls.kind === 'none') return null;
  // SNI names a host; a mesh endpoint is usually an IP, where SNI is not allowed.
  const servername = tls.kind === 'system' ? (tls.serverName ?? (isIP(host) === 0 ? host : undefined)) : undefined;
  if (tls.kind === 'system') {
    const connect = buildConnector({ timeout: connectTimeoutMs, ...(servername ? { servername } : {}) });
    return servername ? (options, callback) => connect({ ...options, servername }, callback) : connect;
  }
  if (identity === null) throw new Error('tls: mesh needs a workload identity'); // compile refuses it
  const matches = compileIdentityPattern(tls.identity);
  const expected = tls.identity;
  const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
    const id = spiffeIdOfSubjectAltName(cert.subjectaltname);
    if (matches(id)) return undefined;
    return Object.assign(new Error(`server identity ${id ?? '(none)'} is not ${expected}`), { code: 'PILOTFISH_PEER_IDENTITY' });
  };
  let built: { readonly material: IdentityMaterial; readonly connect: Connector } | null = null;
  return (options, callback) => {
    const material = identity.material;
    if (built?.material !== material) {
      built = {
        material,
        connect: buildConnector({ timeout: connectTimeoutMs, secureContext: material.clientContext, rejectUnauthorized: true, checkServerIdentity }),
      };
    }
    built.connect(options, callback);
  };
}
