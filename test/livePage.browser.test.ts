/**
 * The live page (`GET /`) and the timeline page (`--report-html`) in a real browser: Debian's
 * chromium driven by playwright-core (no browser is ever downloaded). Skipped when no chromium is
 * found, unless DISTSAMPLER_REQUIRE_BROWSER is set (CI): then it fails instead. Screenshots of
 * each state go to DISTSAMPLER_ARTIFACTS, or a folder in the temp folder that is kept (its path is
 * printed).
 */
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { exitWithin, killStarted, startCli } from './support/cli.ts';
import { useTempDir } from './support/tempDir.ts';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const REQUIRED = Boolean(process.env.DISTSAMPLER_REQUIRE_BROWSER);
const FOUND = existsSync(CHROMIUM);
// Never printed by the CLI: the page's address comes without it.
const TOKEN = 'live-page-s3cret-7f3a';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 60_000 });
const temp = useTempDir('live-page');
afterEach(killStarted);

describe.skipIf(!FOUND && !REQUIRED)(`live page in chromium (${CHROMIUM})`, () => {
  let browser: Browser;
  let shots: string;
  beforeAll(async () => {
    if (!FOUND) throw new Error(`DISTSAMPLER_REQUIRE_BROWSER is set but there is no chromium at ${CHROMIUM} (set CHROMIUM, or apt-get install chromium)`);
    shots = process.env.DISTSAMPLER_ARTIFACTS ? join(process.env.DISTSAMPLER_ARTIFACTS, 'live-page') : mkdtempSync(join(tmpdir(), 'distsampler-live-page-shots-'));
    mkdirSync(shots, { recursive: true });
    console.log(`live page screenshots: ${shots}`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
  });
  const shoot = (page: Page, name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

  it('follows a run with a kill: rank 1 dead and where its tail went, then the run finished with nothing missing', async () => {
    const run = startCli(['run', '--workers', '3', '--epochs', '2', '--length', '3000', '--batch-size', '16', '--step-ms', '2', '--kill', '1@0:0.5', '--token', TOKEN]);
    const [, port] = await run.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    await run.waitFor(/live page: http:\/\/127\.0\.0\.1:\d+\/\?token=\.\.\./);
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/?token=${TOKEN}`);
    // The 303 took the token out of the address bar.
    expect(page.url()).toBe(`http://127.0.0.1:${port}/`);
    await page.waitForSelector('tr[data-rank="0"]', { timeout: 60_000 });
    await shoot(page, '1-live-running');
    await page.waitForSelector('tr[data-rank="1"][data-state="dead"]', { timeout: 60_000 });
    await shoot(page, '2-live-rank1-dead');
    await page.waitForSelector('#finished:not([hidden])', { timeout: 120_000 });
    expect(await page.textContent('#finished')).toMatch(/^run finished: audit OK/);
    expect(await page.textContent('#missing')).toBe('0');
    expect(Number(await page.textContent('#redelivered'))).toBeGreaterThanOrEqual(0);
    expect(await page.locator('#events li[data-type="death"]').count()).toBeGreaterThan(0);
    // Where its tail went: each recipient, with the range it took from rank 1.
    const reassigned = await page.locator('#events li[data-type="reassign"]').allTextContents();
    expect(reassigned.length).toBeGreaterThan(0);
    for (const line of reassigned) expect(line).toMatch(/reassign rank [02]: origin 1 offsets \[\d+, \d+\) from rank 1$/);
    await shoot(page, '3-live-finished');
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    expect(run.stderr() + run.stdout()).not.toContain(TOKEN);
    // The run is over and the page knows it: no reconnect loop.
    await page.waitForSelector('#conn:text-is("closed")', { timeout: 30_000 });
    await page.close();
  });

  it('shows no data with a wrong token (401, no rank rows)', async () => {
    const coordinator = startCli(['coordinator', '--world-size', '1', '--token', TOKEN]);
    const [, port] = await coordinator.waitFor(/listening on ws:\/\/127\.0\.0\.1:(\d+)/);
    await coordinator.waitFor(/live page: http:\/\/127\.0\.0\.1:\d+\//);
    const page = await browser.newPage();
    for (const url of [`http://127.0.0.1:${port}/?token=wrong`, `http://127.0.0.1:${port}/`]) {
      const response = await page.goto(url);
      expect(response?.status()).toBe(401);
      expect(await page.locator('tr[data-rank]').count()).toBe(0);
      expect(await page.locator('body').innerText()).not.toMatch(/epoch|generation|rank \d/);
    }
    await shoot(page, '4-live-wrong-token');
    await page.close();
  });

  it('draws the --report-html timeline of a run with a kill, one lane per rank, with the network blocked', async () => {
    const file = temp.file('timeline.html');
    const run = startCli(['run', '--workers', '3', '--epochs', '1', '--length', '3000', '--step-ms', '0.2', '--kill', '1@0:0.5', '--report-html', file]);
    expect((await exitWithin(run, 120_000)).code, run.stderr()).toBe(0);
    const page = await browser.newPage();
    const url = pathToFileURL(file).href;
    const elsewhere: string[] = [];
    await page.route('**/*', (route) => (route.request().url() === url ? route.continue() : (elsewhere.push(route.request().url()), route.abort())));
    page.on('request', (request) => void (request.url() !== url && elsewhere.push(request.url())));
    await page.goto(url);
    const lanes = await page.locator('svg g[data-lane]').evaluateAll((gs) => gs.map((g) => Number(g.getAttribute('data-lane'))));
    expect(lanes).toEqual([0, 1, 2]);
    // Drawn, not only present: each lane has a size on screen.
    for (const rank of lanes) expect((await page.locator(`svg g[data-lane="${rank}"]`).boundingBox())?.width).toBeGreaterThan(0);
    expect(elsewhere).toEqual([]);
    await shoot(page, '5-report-html-timeline');
    await page.close();
  });
});
