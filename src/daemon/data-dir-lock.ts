import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * Keeps a second daemon off a data dir that one already serves. The file holds the pid; one
 * left by a killed process (kill -9, power loss) is recognised as stale and replaced, and so
 * is one naming a live process that is not a strata daemon (pids are reused after a reboot).
 * The file is rewritten in place and never removed: on a disk that is 100% full, creating it
 * again would fail and the daemon could not start to serve reads (found in review).
 */
export class DataDirLock {
  private constructor(private readonly file: string) {}

  static acquire(dataDir: string): DataDirLock {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const file = join(resolve(dataDir), 'strata.pid');
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o600);
    } catch {
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid && pid !== process.pid && alive(pid) && isStrata(pid)) {
        throw new Error(`the data dir ${dataDir} is in use by another strata process (pid ${pid})`);
      }
      fd = openSync(file, 'r+');
    }
    try {
      writeRecord(fd, process.pid);
    } finally {
      closeSync(fd);
    }
    return new DataDirLock(file);
  }

  release(): void {
    try {
      const fd = openSync(this.file, 'r+');
      try {
        writeRecord(fd, 0);
      } finally {
        closeSync(fd);
      }
    } catch {
      // already gone
    }
  }
}

/** The pid, padded to a fixed width so that a rewrite in place never needs a new block. */
function writeRecord(fd: number, pid: number): void {
  writeSync(fd, `${String(pid).padStart(10, ' ')}\n`, 0);
  ftruncateSync(fd, 11);
}

/** Whether a live pid is a strata daemon; true where that cannot be told (no /proc). */
function isStrata(pid: number): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /strata|cli\.js/.test(cmdline);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT' || !existsSync('/proc/self/cmdline');
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
