// The example's config, as an app would write it: `effects worker` in this folder picks it up.
import { defineConfig } from '../../src/index.js';
import { orderEffects } from './effects.js';

export const APP_SCHEMA = process.env.ORDERS_SCHEMA ?? 'orders_app';

export default defineConfig({
  prefix: process.env.EFFECTS_PREFIX ?? 'effects-demo',
  schema: process.env.EFFECTS_SCHEMA ?? 'effects_demo',
  poison: { threshold: 5 },
  worker: { lockDuration: 5000, stalledInterval: 5000 },
  effects: orderEffects({ appSchema: APP_SCHEMA, latencyScale: Number(process.env.ORDERS_LATENCY_SCALE ?? 1) }),
});
