// Drives the real @segment/analytics-node SDK against a Junction server and prints, as one JSON
// array on stdout, every message the SDK put on the wire (captured from its own http_request
// events), so the Rust test can compare them with what Junction stored.
// Usage: node send.mjs HOST WRITE_KEY ROUNDS
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, rounds] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, flushAt: 7, flushInterval: 50, maxRetries: 3 })
const sent = []
const failures = []
analytics.on('http_request', (request) => sent.push(...JSON.parse(request.body).batch))
analytics.on('http_response', (response) => {
  if (response.status !== 200) failures.push(response.status)
})
analytics.on('error', (error) => failures.push(String(error.reason ?? error.code ?? error)))

for (let round = 0; round < Number(rounds); round++) {
  const userId = `node-user-${round}`
  analytics.identify({ userId, traits: { email: `${userId}@example.com`, plan: 'pro', seats: round } })
  analytics.track({ userId, event: 'Plan Upgraded', properties: { revenue: 9.99, currency: 'EUR' } })
  analytics.page({ userId, category: 'Docs', name: 'Intro', properties: { url: 'https://x.test/docs' } })
  analytics.screen({ anonymousId: `node-anon-${round}`, name: 'Home', properties: { tab: 1 } })
  analytics.group({ userId, groupId: `g-${round}`, traits: { name: 'Acme', employees: 42 } })
  analytics.alias({ userId, previousId: `node-anon-${round}` })
  analytics.track({ anonymousId: `node-anon-${round}`, event: 'Viewed', timestamp: new Date('2024-01-01T00:00:00.123Z') })
}
await analytics.closeAndFlush({ timeout: 20000 })
if (failures.length > 0) {
  console.error(`analytics-node reported failures: ${JSON.stringify(failures)}`)
  process.exit(1)
}
console.log(JSON.stringify(sent))
