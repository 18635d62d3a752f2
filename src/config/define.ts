import type { EffectDefinition, EffectsConfig } from './types.js';

/** Declares the app's effects and connections; identity at runtime, typed for the editor. */
export function defineConfig(config: EffectsConfig): EffectsConfig {
  return config;
}

/** Declares one effect; identity at runtime, typed for the editor. */
export function defineEffect(definition: EffectDefinition): EffectDefinition {
  return definition;
}
