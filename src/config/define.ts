import type { EffectDefinition, EffectsConfig } from './types.js';

/**
 * Declares the app's effects and connections; identity at runtime, typed for the editor. The event
 * names in `on` keep their literal types, so `createEffects(config).emit` accepts only those.
 */
export function defineConfig<const E extends string>(config: EffectsConfig<E>): EffectsConfig<E> {
  return config;
}

/** Declares one effect; identity at runtime, typed for the editor (its `on` events as literals). */
export function defineEffect<const E extends string>(definition: EffectDefinition<E>): EffectDefinition<E> {
  return definition;
}
