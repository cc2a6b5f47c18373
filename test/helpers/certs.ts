// Test PKI made at test time with the `openssl` CLI: a CA, a server certificate for 127.0.0.1 and
// localhost, a client certificate, a daemon ("peer") certificate that is both, and an unrelated
// second CA with its own client certificate (for "trusts the wrong CA" cases).
// EC P-256 keys, valid one day; nothing is checked in.

import { execFile, execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface TestPki {
  caPem: Buffer;
  serverCertPem: Buffer;
  serverKeyPem: Buffer;
  clientCertPem: Buffer;
  clientKeyPem: Buffer;
  /** A CA that signed none of the above. */
  otherCaPem: Buffer;
  /** A client certificate signed by the other CA. */
  otherClientCertPem: Buffer;
  otherClientKeyPem: Buffer;
  /** A daemon's certificate: server and client at once (a daemon serves gRPC and dials peers with one
   * identity), for 127.0.0.1 and localhost. Files in the PKI directory: peer.pem, peer.key, ca.pem. */
  peerCertPem: Buffer;
  peerKeyPem: Buffer;
}

/** Why openssl cannot be used here, or undefined when it can. */
export function opensslMissingReason(): string | undefined {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore", timeout: 10_000 });
    return undefined;
  } catch (e) {
    return `openssl CLI not usable: ${e instanceof Error ? e.message : String(e)}`;
  }
}

function openssl(dir: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile("openssl", args, { cwd: dir, timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args.join(" ")} failed: ${err.message}\n${stderr}`));
      else resolve();
    });
  });
}

const KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    "req", "-x509", ...KEY, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "1", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

async function makeLeaf(dir: string, name: string, ca: string, serial: number, extensions: string): Promise<void> {
  await openssl(dir, ["req", ...KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`]);
  await writeFile(join(dir, `${name}.ext`), extensions);
  await openssl(dir, [
    "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-set_serial", String(serial),
    "-days", "1", "-out", `${name}.pem`, "-extfile", `${name}.ext`,
  ]);
}

export async function makeTestPki(dir: string): Promise<TestPki> {
  await makeCa(dir, "ca");
  await makeCa(dir, "other-ca");
  const leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n";
  await makeLeaf(dir, "server", "ca", 2, `${leaf}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n`);
  await makeLeaf(dir, "client", "ca", 3, `${leaf}extendedKeyUsage=clientAuth\n`);
  await makeLeaf(dir, "other-client", "other-ca", 4, `${leaf}extendedKeyUsage=clientAuth\n`);
  await makeLeaf(dir, "peer", "ca", 5, `${leaf}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n`);
  const read = (file: string): Promise<Buffer> => readFile(join(dir, file));
  return {
    caPem: await read("ca.pem"),
    serverCertPem: await read("server.pem"),
    serverKeyPem: await read("server.key"),
    clientCertPem: await read("client.pem"),
    clientKeyPem: await read("client.key"),
    otherCaPem: await read("other-ca.pem"),
    otherClientCertPem: await read("other-client.pem"),
    otherClientKeyPem: await read("other-client.key"),
    peerCertPem: await read("peer.pem"),
    peerKeyPem: await read("peer.key"),
  };
}
