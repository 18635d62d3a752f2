import { describe, expect, expectTypeOf, it } from 'vitest';
import { createEffects, defineConfig, defineEffect, type EffectsConfig } from '../src/index.js';

/** What an app's editor and compiler see; `npm test` type-checks this file before running it. */
describe('the types an app sees', () => {
  const config = defineConfig({
    effects: [
      defineEffect({ name: 'send-email', on: 'order_placed', run() {} }),
      { name: 'notify-crm', on: ['order_placed', 'order_cancelled'], run() {} },
    ],
  });

  it('emit takes the events of a config written with defineConfig, and any string for one typed as EffectsConfig', () => {
    type EventsOf<C extends EffectsConfig> = Parameters<ReturnType<typeof createEffects<C>>['emit']>[0];
    expectTypeOf<EventsOf<typeof config>>().toEqualTypeOf<'order_placed' | 'order_cancelled'>();
    expectTypeOf<EventsOf<EffectsConfig>>().toEqualTypeOf<string>();
    // defineConfig and defineEffect are the identity at run time.
    expect(config.effects[1].on).toEqual(['order_placed', 'order_cancelled']);
  });

  it("refuses an event the config's effects are not owed on", () => {
    const typo = (effects: ReturnType<typeof createEffects<typeof config>>) =>
      // @ts-expect-error 'order_placd' is not an event of this config
      effects.emit('order_placd', 1);
    expect(typeof typo).toBe('function');
  });
});
