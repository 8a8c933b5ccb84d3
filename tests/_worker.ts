// A Cloudflare Worker that signs the tokens it is sent, for tests/e2e/workerd.test.ts. Bundled with
// esbuild for platform "neutral" (no Node built-ins) and served by the real workerd.

import { CredentialsError, dsqlToken, rdsToken } from "../mod.ts";
import { getCryptoBackend } from "../src/core/crypto.ts";

interface Job {
  kind: "rds" | "dsql";
  options: Record<string, unknown> & {
    signingDate?: string;
    credentials?: { expiration?: string };
  };
}

export default {
  async fetch(request: Request): Promise<Response> {
    const jobs: Job[] = await request.json();
    const results = [];
    for (const { kind, options } of jobs) {
      const o = { ...options } as Record<string, unknown>;
      if (options.signingDate) o.signingDate = new Date(options.signingDate);
      if (options.credentials?.expiration) {
        o.credentials = {
          ...options.credentials,
          expiration: new Date(options.credentials.expiration),
        };
      }
      try {
        const token = kind === "rds" ? await rdsToken(o as never) : await dsqlToken(o as never);
        results.push({ token });
      } catch (e) {
        const error = e as Error;
        results.push({
          error: `${error.name}: ${error.message}`,
          credentialsError: e instanceof CredentialsError,
        });
      }
    }
    return Response.json({ backend: getCryptoBackend().name, results });
  },
};
