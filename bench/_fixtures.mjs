// Shared inputs for the benchmarks: the same static credentials and hosts for pg-iam and the SDK.

/** Deterministic pseudo-random text of `length` characters drawn from `alphabet`. */
function pseudoRandom(length, alphabet, seed) {
  let x = seed >>> 0;
  let out = "";
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out += alphabet[(x >>> 8) % alphabet.length];
  }
  return out;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+=";

/**
 * Static temporary credentials, the shape STS hands out: a session token of 800 characters.
 * @type {{ accessKeyId: string, secretAccessKey: string, sessionToken: string }}
 */
export const CREDENTIALS = Object.freeze({
  accessKeyId: "ASIA" + pseudoRandom(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 7),
  secretAccessKey: pseudoRandom(40, B64.slice(0, 64), 11),
  sessionToken: pseudoRandom(800, B64, 13),
});

export const REGION = "us-east-1";
export const RDS_HOST = "bench-db.cluster-c9akciq32x1z.us-east-1.rds.amazonaws.com";
export const RDS_PORT = 5432;

/**
 * A distinct, valid-looking RDS user name per call.
 * @param {number} i
 * @returns {string}
 */
export function username(i) {
  return "app_user_" + i.toString(36);
}

/**
 * A distinct DSQL cluster endpoint per call: 26-character cluster id, as DSQL issues them.
 * @param {number} i
 * @returns {string}
 */
export function dsqlHost(i) {
  return i.toString(36).padStart(26, "a") + ".dsql.us-east-1.on.aws";
}

/**
 * Environment variables that carry {@link CREDENTIALS} for the SDK's default chain and pg-iam's
 * env fallback.
 * @returns {Record<string, string>}
 */
export function credentialEnv() {
  return {
    AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    AWS_SESSION_TOKEN: CREDENTIALS.sessionToken,
  };
}
