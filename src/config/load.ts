import { existsSync } from 'node:fs';
import path from 'node:path';
import { createJiti } from 'jiti';
import { UsageError } from '../core/errors.js';
import { validateConfig } from './schema.js';
import type { EffectsConfig } from './types.js';

export const CONFIG_FILE_NAMES = ['effects.config.ts', 'effects.config.mts', 'effects.config.mjs', 'effects.config.js'];

/** The config file to use: `--config`, then `EFFECTS_CONFIG`, then the first default name in `cwd`. */
export function findConfigFile(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): string | undefined {
  const given = explicit ?? env.EFFECTS_CONFIG;
  if (given) {
    const resolved = path.resolve(cwd, given);
    if (!existsSync(resolved)) {
      throw new UsageError(`Config file not found: ${resolved}`, 'Check --config or EFFECTS_CONFIG.');
    }
    return resolved;
  }
  return CONFIG_FILE_NAMES.map((name) => path.join(cwd, name)).find((file) => existsSync(file));
}

/** Loads (TypeScript included) and validates a config file. */
export async function loadConfigFile(file: string): Promise<EffectsConfig> {
  const jiti = createJiti(import.meta.url, { interopDefault: true, moduleCache: false });
  let loaded: unknown;
  try {
    loaded = await jiti.import(file, { default: true });
  } catch (error) {
    throw new UsageError(
      `Could not load config file ${file}: ${(error as Error).message}`,
      'Fix the error above; the file must export default defineConfig({ ... }).',
    );
  }
  return validateConfig(loaded, file);
}
