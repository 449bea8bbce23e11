// Sends the e2e scenario through Segment's analytics-node to the collector.
// Usage: node send.mjs HOST WRITE_KEY SCENARIO.json; SCENARIO.json is a list of
// {"call": "identify" | "track" | "page" | "alias", ...the call's fields}.
// Exits 1 when any event could not be delivered.
import { readFileSync } from 'node:fs'
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, scenarioPath] = process.argv.slice(2)
const calls = JSON.parse(readFileSync(scenarioPath, 'utf8'))
const analytics = new Analytics({ writeKey, host, flushAt: 5, flushInterval: 100, maxRetries: 3 })
const failures = []
analytics.on('error', (err) => failures.push(`${err.code}: ${err.reason ?? ''}`))
for (const { call, ...fields } of calls) {
  analytics[call](fields)
}
await analytics.closeAndFlush({ timeout: 30000 })
if (failures.length) {
  console.error(failures.join('\n'))
  process.exit(1)
}
console.log(`sent ${calls.length} calls`)
