import { InvalidArgumentError } from 'commander';
import { parseDuration, parseRate, parseRatio, parseTime } from '../core/duration.js';
import { UsageError } from '../core/errors.js';

/** commander argument parsers: each turns our UsageError into commander's own (exit 2). */
const asArgument =
  <T>(parse: (text: string) => T) =>
  (text: string): T => {
    try {
      return parse(text);
    } catch (error) {
      if (error instanceof UsageError) throw new InvalidArgumentError(error.message);
      throw error;
    }
  };

export const durationArg = asArgument((text) => parseDuration(text));
export const timeArg = asArgument((text) => parseTime(text));
export const rateArg = asArgument((text) => parseRate(text, 'rate'));
export const ratioArg = asArgument((text) => parseRatio(text));
export const listArg = (text: string, previous: string[] = []) => [
  ...previous,
  ...text.split(',').map((s) => s.trim()).filter(Boolean),
];
export const positiveIntArg = asArgument((text) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`expected a positive integer, got "${text}"`);
  return n;
});
export const portArg = asArgument((text) => {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`expected a port (0-65535), got "${text}"`);
  return n;
});
