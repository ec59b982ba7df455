/**
 * Debian's Chromium driven by playwright-core: never a browser that Playwright downloads.
 * `$TICKMESH_CHROMIUM` overrides the binary (default `/usr/bin/chromium`, installed by
 * `tests/browser/setup.sh`).
 */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

process.env.PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD = '1';
const { chromium } = await import('playwright-core');

export const CHROMIUM = process.env.TICKMESH_CHROMIUM || '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * A headless Chromium with a fresh profile (`--user-data-dir`), removed on close.
 * @returns {Promise<{context: import('playwright-core').BrowserContext, close: () => Promise<void>}>}
 */
export async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run \`bash tests/browser/setup.sh\``);
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tickmesh-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1600, height: 900 },
      timeout: 30000,
    });
    return {
      context,
      async close() {
        await context.close().catch(() => {});
        fs.rmSync(userDataDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw err;
  }
}
