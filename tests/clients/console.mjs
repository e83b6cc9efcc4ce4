// Drives Junction's console in a real browser (Debian's chromium through playwright-core) and
// prints one JSON report on stdout for crates/junction/tests/console.rs to check: what each
// page showed, what replaying a dead letter did, what signing out did, what a form without
// the CSRF token got, and every error the browser's console reported. Screenshots of each page
// go to SHOTS_DIR.
// Usage: node console.mjs BASE_URL ADMIN_TOKEN SHOTS_DIR WRITE_KEY PERSON
import { chromium } from 'playwright-core'
import { mkdirSync } from 'node:fs'

const [base, token, shots, writeKey, person] = process.argv.slice(2)
mkdirSync(shots, { recursive: true })
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // Without the background-networking flags, Chromium dials Google's hosts at start.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
const report = { pages: {}, consoleErrors: [] }
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  const page = await context.newPage()
  // Notes when the live tail's event stream is open (a test hook, injected by the driver: the
  // console's CSP allows no inline script of its own).
  await page.addInitScript(() => {
    window.liveTailOpen = false
    document.addEventListener('htmx:sseOpen', () => { window.liveTailOpen = true })
  })
  page.on('console', (message) => {
    if (message.type() === 'error') report.consoleErrors.push(message.text())
  })
  page.on('pageerror', (error) => report.consoleErrors.push(String(error)))
  page.on('response', (response) => {
    if (response.status() >= 400) {
      report.consoleErrors.push(`${response.status()} for ${response.url()}`)
    }
  })

  const visit = async (name, url) => {
    if (url) await page.goto(base + url)
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true })
    report.pages[name] = {
      url: page.url().slice(base.length),
      h1: (await page.locator('h1').first().textContent()).trim(),
      text: await page.locator('main').innerText(),
    }
  }

  await page.goto(base + '/console')
  report.signInUrl = page.url().slice(base.length)
  await visit('sign-in')
  await page.getByLabel('Admin token').fill(token)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.waitForURL(base + '/console')
  await visit('overview')
  report.overviewCharts = await page.locator('.charts svg').count()
  // The figures refresh themselves (htmx, every 5 s): wait for one refresh to land.
  await page.waitForResponse((r) => r.url().endsWith('/console/overview/figures') && r.status() === 200, { timeout: 15000 })
  report.overviewRefreshed = true

  await visit('events', '/console/events')
  // The live tail: an event sent now appears at the top of the table, without a reload.
  await page.waitForFunction(() => window.liveTailOpen, null, { timeout: 10000 })
  const messageId = `live-${Date.now()}`
  const sentAt = Date.now()
  const sent = await fetch(`${base}/v1/track`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Basic ' + Buffer.from(`${writeKey}:`).toString('base64'),
    },
    body: JSON.stringify({ userId: 'live-user', event: 'Live Tail Checked', messageId }),
  })
  report.liveSendStatus = sent.status
  await page.locator('#event-rows tr').first().filter({ hasText: messageId }).waitFor({ timeout: 5000 })
  report.liveTailMs = Date.now() - sentAt
  await page.screenshot({ path: `${shots}/events-live.png`, fullPage: true })
  await page.locator('tbody a').first().click()
  await page.waitForURL(/\/console\/events\/\d+$/)
  await visit('event')

  await visit('runs', '/console/runs')
  await page.locator('tbody a').first().click()
  await page.waitForURL(/\/console\/runs\/.+/)
  await visit('run')

  // A workflow: its diagram, and "try it" with the sample event the page offers.
  await visit('workflows', '/console/workflows')
  await page.getByRole('link', { name: 'profile-sync' }).click()
  await page.waitForURL(/\/console\/workflows\/profile-sync$/)
  report.diagrams = await page.locator('figure.diagram svg').count()
  await page.getByRole('button', { name: 'Try it' }).click()
  await page.waitForURL(/\/console\/workflows\/profile-sync\/try$/)
  await visit('workflow-try')
  report.tryOutput = await page.locator('pre.output').innerText()

  // A workflow whose YAML names a webhook: shown without its path (a webhook's secret).
  await page.goto(base + '/console/workflows/notify')
  report.notifyPage = await page.locator('main').innerText()

  // A person, found by their userId from the search form.
  await page.goto(base + '/console/people')
  await page.getByLabel(/userId, anonymousId, email/).fill(person)
  await page.getByRole('button', { name: 'Find' }).click()
  await page.waitForURL(/\/console\/people\?q=/)
  await visit('people')

  await visit('dead-letters', '/console/dlq')
  // A form posted without the session's CSRF token (the cookie goes along, as a forged
  // cross-site form's would not even manage).
  const forged = await context.request.post(base + '/console/dlq', {
    form: { do: 'discard', id: 'anything' },
    maxRedirects: 0,
  })
  report.withoutCsrf = forged.status()
  // Replay every dead letter shown: the page follows the job's progress until it is done.
  await page.getByRole('button', { name: /^Replay all \d+ shown$/ }).click()
  await page.waitForURL(/\/console\/dlq\?job=\d+$/)
  const finished = page.getByRole('status').filter({ hasText: /^Replayed \d+ of \d+/ })
  await finished.waitFor({ timeout: 15000 })
  report.replayNotice = (await finished.textContent()).trim()
  await visit('dead-letters-replaying')
  await visit('dead-letters-replayed', '/console/dlq')

  // Messages a frequency cap kept back: listed apart, sent anyway on request.
  await visit('capped', '/console/dlq?capped=1')
  await page.locator('tbody input[type=checkbox]').first().check()
  await page.getByRole('button', { name: 'Send selected anyway' }).click()
  await page.waitForURL(/\/console\/dlq\?capped=1&notice=/)
  report.releaseNotice = (await page.getByRole('status').textContent()).trim()

  await page.getByRole('button', { name: 'Sign out' }).click()
  await page.waitForURL(base + '/console/login')
  await page.goto(base + '/console')
  report.afterSignOutUrl = page.url().slice(base.length)
} finally {
  await browser.close()
}
console.log(JSON.stringify(report))
