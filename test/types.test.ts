import { describe, expect, expectTypeOf, it } from 'vitest';
import { createEffects, defineConfig, defineEffect, type EffectDefinition, type EffectsConfig, type EventOf } from '../src/index.js';

/**
 * What an app's editor and compiler see; `npm test` type-checks this file before running it. Each
 * function below is only type-checked, never called: createEffects would connect.
 */
describe('the types an app sees', () => {
  const config = defineConfig({
    effects: [
      defineEffect({ name: 'send-email', on: 'order_placed', run() {} }),
      { name: 'notify-crm', on: ['order_placed', 'order_cancelled'], run: (task, ctx) => ctx.log.info({ id: task.id }, 'crm') },
    ],
  });
  const effectsOf = () => createEffects(config);

  it('emit takes the events of a config written with defineConfig, and any string for one typed as EffectsConfig', () => {
    expectTypeOf<Parameters<ReturnType<typeof effectsOf>['emit']>[0]>().toEqualTypeOf<'order_placed' | 'order_cancelled'>();
    expectTypeOf<EventOf<typeof config>>().toEqualTypeOf<'order_placed' | 'order_cancelled'>();
    expectTypeOf<EventOf<EffectsConfig>>().toEqualTypeOf<string>();
    const loose: EffectsConfig = config;
    const looseEffects = () => createEffects(loose);
    expectTypeOf<Parameters<ReturnType<typeof looseEffects>['emit']>[0]>().toEqualTypeOf<string>();
    // No effects yet: any event, not none.
    const empty = defineConfig({ effects: [] });
    expectTypeOf<EventOf<typeof empty>>().toEqualTypeOf<string>();
    // defineConfig and defineEffect are the identity at run time.
    expect(config.effects[1].on).toEqual(['order_placed', 'order_cancelled']);
  });

  it("refuses an event the config's effects are not owed on, and a config key that does not exist", () => {
    const typo = () =>
      // @ts-expect-error 'order_placd' is not an event of this config
      effectsOf().emit('order_placd', 1);
    const misspelt = () =>
      defineConfig({
        // @ts-expect-error `prefx` is not a config key
        prefx: 'shop',
        effects: [],
      });
    expect([typeof typo, typeof misspelt]).toEqual(['function', 'function']);
  });

  it('leaves the config an app can still change, and effects lists it can still build', () => {
    config.prefix = process.env.SHOP_PREFIX ?? 'shop';
    const more: EffectDefinition[] = [defineEffect({ name: 'send-sms', on: 'order_shipped', run() {} })];
    more.push(defineEffect({ name: 'notify-warehouse', on: 'order_paid', run() {} }));
    const events = (definition: EffectDefinition): string[] => (Array.isArray(definition.on) ? definition.on : [definition.on]);
    expect(more.flatMap(events)).toEqual(['order_shipped', 'order_paid']);
    expect(config.prefix).toBe(process.env.SHOP_PREFIX ?? 'shop');
  });
});
