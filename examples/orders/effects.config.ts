// The example's config, as an app would write it: `effects worker` in this folder picks it up.
import { defineConfig } from '../../src/index.js';
import { orderEffects } from './effects.js';

export const APP_SCHEMA = process.env.ORDERS_SCHEMA ?? 'orders_app';

/**
 * What each third party accepts, in calls per second across every worker: BullMQ holds the fleet to
 * it, and a ramp after an outage (`effects resume --all --ramp 10m`) climbs back up to it.
 */
const CALLS_PER_SECOND: Record<string, number> = {
  'send-confirmation-email': 100,
  'notify-crm': 50,
  'reserve-inventory': 200,
  'charge-analytics': 200,
  'notify-warehouse': 100,
  'update-search-index': 200,
  'send-sms': 50,
  'fraud-screening': 100,
  'create-invoice': 100,
  'sync-loyalty-points': 100,
};

export default defineConfig({
  prefix: process.env.EFFECTS_PREFIX ?? 'effects-demo',
  schema: process.env.EFFECTS_SCHEMA ?? 'effects_demo',
  poison: { threshold: 5 },
  worker: { lockDuration: 5000, stalledInterval: 5000 },
  effects: orderEffects({ appSchema: APP_SCHEMA, latencyScale: Number(process.env.ORDERS_LATENCY_SCALE ?? 1) }).map((effect) => ({
    ...effect,
    rateLimit: { max: CALLS_PER_SECOND[effect.name], per: '1s' },
  })),
});
