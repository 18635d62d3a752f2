/** What one poison-pill alert says. */
export interface PoisonAlert {
  /** The BullMQ prefix: which deployment, when several post to one channel. */
  prefix: string;
  queue: string;
  jobId: string;
  event: string;
  /** The business id the task points at. */
  id: string;
  /** Attempts made, the one that reached the threshold included. */
  attempts: number;
  /** Attempts the job is allowed before it fails for good. */
  maxAttempts: number;
  error: string;
  /** When the threshold was reached (epoch ms). */
  at: number;
}

/** Longest error text put in a message; the full stack is on the job (`poison show`). */
const MAX_ERROR = 500;

export const inspectCommand = (a: Pick<PoisonAlert, 'prefix' | 'queue' | 'jobId'>) =>
  `effects poison show ${a.queue} ${a.jobId}${a.prefix === 'effects' ? '' : ` --prefix ${shellWord(a.prefix)}`}`;

/** `text` as one shell word: quoted when it holds more than letters, digits and `_.:-` (a `{tag}` prefix). */
function shellWord(text: string): string {
  return /^[\w.:-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * The webhook body: Slack's incoming-webhook format (`text` for notifications and plain receivers,
 * `blocks` with one field per fact for people), so the same POST works for Slack and for anything
 * that reads JSON.
 */
export function poisonMessage(alert: PoisonAlert): Record<string, unknown> {
  const error = alert.error.length > MAX_ERROR ? `${alert.error.slice(0, MAX_ERROR)}…` : alert.error;
  const retrying = alert.attempts < alert.maxAttempts;
  const state = retrying ? `still retrying (${alert.attempts} of ${alert.maxAttempts} attempts)` : `failed for good after ${alert.attempts} attempts`;
  const inspect = inspectCommand(alert);
  const field = (label: string, value: string) => ({ type: 'mrkdwn', text: `*${label}*\n${value}` });
  return {
    text: `Poison pill in ${alert.queue}: job ${alert.jobId} (${alert.event} ${alert.id}) ${state}: ${error}. Inspect: ${inspect}`,
    blocks: [
      { type: 'header', text: { type: 'plain_text', text: `Poison pill in ${alert.queue}`.slice(0, 150) } },
      {
        type: 'section',
        fields: [
          field('Queue', alert.queue),
          field('Job id', `\`${alert.jobId}\``),
          field('Event', alert.event),
          field('Id', `\`${alert.id}\``),
          field('Attempts', `${alert.attempts} of ${alert.maxAttempts}${retrying ? ' (still retrying)' : ' (failed)'}`),
          field('Prefix', alert.prefix),
        ],
      },
      { type: 'section', text: { type: 'mrkdwn', text: `*Error*\n\`\`\`${error.replace(/```/g, "'''")}\`\`\`` } },
      {
        type: 'context',
        elements: [{ type: 'mrkdwn', text: `Inspect: \`${inspect}\` · ${new Date(alert.at).toISOString()}` }],
      },
    ],
  };
}
