/**
 * The inbound listener's TLS: mutual TLS with a client certificate required and chained to
 * the trust bundle (OpenSSL verifies the chain and the dates during the handshake), then the
 * caller's SPIFFE ID read once per connection and kept on the socket for every request on it.
 * A rotation swaps the secure context for new connections; open ones keep theirs.
 */
import type { Socket } from 'node:net';
import type { SecureContextOptions, TLSSocket, TlsOptions } from 'node:tls';
import { spiffeIdOfSubjectAltName } from '../identity/spiffe.js';
import type { IdentityMaterial } from '../identity/workload-identity.js';

/** The caller's SPIFFE ID, kept on its TLS socket (no map to grow). */
const PEER_IDENTITY = Symbol('pilotfish.peerIdentity');
type IdentifiedSocket = Socket & { [PEER_IDENTITY]?: string };

/**
 * TLS 1.3 suites are all AEAD with forward secrecy; for TLS 1.2 (only when configured) the
 * same property: ECDHE with AES-GCM or ChaCha20-Poly1305, nothing else.
 */
const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** The secure context of the inbound listener for `material` (also what a rotation installs). */
export function serverContextOptions(material: IdentityMaterial, minVersion: 'TLSv1.3' | 'TLSv1.2'): SecureContextOptions {
  return {
    cert: material.certPem,
    key: material.keyPem,
    ca: material.bundlePem,
    minVersion,
    ciphers: TLS12_CIPHERS,
    // Keeps a resumed session tied to a context that saw the same trust bundle.
    sessionIdContext: material.fingerprint.slice(0, 32),
  };
}

/** Options of the inbound TLS server: mutual TLS, ALPN h2 or http/1.1. */
export function serverTlsOptions(material: IdentityMaterial, minVersion: 'TLSv1.3' | 'TLSv1.2', handshakeTimeoutMs: number): TlsOptions {
  return {
    ...serverContextOptions(material, minVersion),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2', 'http/1.1'],
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/**
 * Reads the verified peer's SPIFFE ID onto the socket; null when its certificate has none
 * (chained to the bundle, but not a workload identity: the connection is refused).
 */
export function identifyPeer(socket: TLSSocket): string | null {
  const id = spiffeIdOfSubjectAltName(socket.getPeerCertificate().subjectaltname);
  if (id !== null) (socket as IdentifiedSocket)[PEER_IDENTITY] = id;
  return id;
}

/** The SPIFFE ID `identifyPeer` kept on a socket, or null (plaintext, outbound). */
export function peerIdentity(socket: object | null | undefined): string | null {
  return (socket as IdentifiedSocket | null | undefined)?.[PEER_IDENTITY] ?? null;
}

/**
 * A handshake failure as a bounded metric label. Node verifies the client's chain once the
 * handshake is done and then destroys the socket, so that verdict is on the socket
 * (`authorizationError`, e.g. CERT_HAS_EXPIRED) while the error is only a hang-up.
 */
export function handshakeFailureReason(err: NodeJS.ErrnoException, authorizationError: string | Error | undefined): string {
  const verdict = authorizationError === undefined ? '' : String(authorizationError);
  const text = `${verdict} ${err.code ?? ''} ${err.message}`;
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|NO_CERTIFICATE/i.test(text)) return 'no_certificate';
  if (/EXPIRED|NOT_YET_VALID/i.test(text)) return 'expired';
  if (/UNKNOWN_CA|UNABLE_TO_GET_ISSUER|SELF_SIGNED|CERTIFICATE_VERIFY_FAILED|unable to verify/i.test(text)) return 'untrusted';
  if (/ETIMEDOUT|timeout/i.test(text)) return 'timeout';
  if (/ECONNRESET|EPIPE|socket hang up/i.test(text)) return 'reset';
  if (/WRONG_VERSION|UNSUPPORTED_PROTOCOL|NO_SHARED_CIPHER|HTTP_REQUEST|WRONG_SSL_VERSION|VERSION/i.test(text)) return 'protocol';
  return 'other';
}
