// Files pg-iam writes for others to trust (the gateway's CA, the cached RDS CA bundle), written
// as mkstemp(3) and rename(2) would: a temporary file of an unpredictable name created
// exclusively (O_CREAT|O_EXCL never follows a symbolic link, nor opens a file someone planted),
// written, synced, then renamed over the target; never a file another user owns or can replace.

import {
  closeSync,
  constants,
  fchmodSync,
  fsyncSync,
  lstatSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import process from "node:process";

const EXCLUSIVE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL |
  (constants.O_NOFOLLOW ?? 0);
const WORLD_WRITABLE = 0o002;
const STICKY = 0o1000;

/**
 * Throws unless `file` can be written safely in its directory: not in a directory every user may
 * write to unless it is sticky (then anyone could replace the file after it is written), and, in
 * a sticky one, not an existing file another user owns (they control what it says).
 */
export function checkReplaceable(file: string): void {
  const uid = process.getuid?.();
  if (uid === undefined) return; // Windows: no owners or modes to compare
  const dir = dirname(file);
  const mode = statSync(dir).mode;
  if ((mode & WORLD_WRITABLE) === 0) return;
  if ((mode & STICKY) === 0) {
    throw new Error(
      `its directory ${dir} is writable by every user and not sticky (mode ` +
        `${(mode & 0o7777).toString(8)}): anyone could replace the file; choose another directory`,
    );
  }
  let owner: number;
  try {
    owner = lstatSync(file).uid;
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return;
    throw error;
  }
  if (owner !== uid) {
    throw new Error(
      `${file} already exists, owned by another user (uid ${owner}), in the shared directory ` +
        `${dir} (writable by every user, sticky): it is not replaced; remove it, or choose ` +
        `another file`,
    );
  }
}

/**
 * Writes `text` to `file` whole or not at all, with permissions `mode`: a reader never sees half
 * of it, and no file or link planted beside it is written through. Checks `file` with
 * {@linkcode checkReplaceable} first; on any failure the temporary file is removed.
 */
export function writeFileAtomically(file: string, text: string, mode: number): void {
  checkReplaceable(file);
  const dir = dirname(file);
  let temp = "";
  let fd = -1;
  for (let attempt = 1; fd < 0; attempt++) {
    const random = crypto.getRandomValues(new Uint8Array(12));
    const suffix = Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("");
    temp = join(dir, `.${basename(file)}.${suffix}.tmp`);
    try {
      fd = openSync(temp, EXCLUSIVE, 0o600);
    } catch (error) {
      // A name taken already (by chance, or planted): another one, as mkstemp does.
      if ((error as { code?: string }).code !== "EEXIST" || attempt === 10) throw error;
    }
  }
  try {
    try {
      fchmodSync(fd, mode); // exactly `mode`, whatever the umask
      let bytes = new TextEncoder().encode(text);
      while (bytes.length > 0) bytes = bytes.subarray(writeSync(fd, bytes));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}
