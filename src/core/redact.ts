/**
 * Connection strings reach logs, errors and JSON only through here, so a password never does.
 */
export function redactUrl(url: string | undefined): string {
  if (!url) return '';
  try {
    const parsed = new URL(url);
    // "pg:secret@db" parses with no host and the secret in its path: treat it as malformed.
    if (!parsed.host && url.includes('@')) return maskUserInfo(url);
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) {
      if (/pass|secret|token|key/i.test(key)) parsed.searchParams.set(key, '***');
    }
    return parsed.toString();
  } catch {
    return maskUserInfo(url);
  }
}

/** Not a URL we can parse: hide everything between the scheme and the last `@`, where credentials go. */
function maskUserInfo(url: string): string {
  if (!url.includes('@')) return url;
  return url.replace(/^([a-z][a-z0-9+.-]*:(?:\/\/)?)?.*@/i, (_match, scheme: string | undefined) => `${scheme ?? ''}***@`);
}

/** Removes every occurrence of the given secrets from a text (an error message from a driver, say). */
export function scrubSecrets(text: string, urls: Array<string | undefined>): string {
  return secretScrubber(urls)?.(text) ?? text;
}

/**
 * A scrubber for the passwords in `urls`, or undefined when none has one. The URLs are parsed once
 * here, not once per call: the process logger runs it on every line, and parsing two URLs per line
 * cost the worker about as much as writing the line.
 */
export function secretScrubber(urls: Array<string | undefined>): ((text: string) => string) | undefined {
  const forms = new Set<string>();
  for (const url of urls) {
    const password = passwordOf(url);
    if (!password) continue;
    forms.add(password);
    forms.add(encodeURIComponent(password));
    // Inside a JSON log line, quotes and backslashes in the password appear escaped.
    forms.add(JSON.stringify(password).slice(1, -1));
  }
  forms.delete('');
  if (forms.size === 0) return undefined;
  const all = [...forms];
  return (text) => {
    let out = text;
    for (const form of all) if (out.includes(form)) out = out.split(form).join('***');
    return out;
  };
}

function passwordOf(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    const password = new URL(url).password;
    return password ? decodeURIComponent(password) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A webhook URL for logs: scheme, host and port only. Webhook services (Slack's among them) put the
 * secret in the path, where redactUrl cannot tell it from an ordinary path.
 */
export function redactWebhookUrl(url: string | undefined): string {
  if (!url) return '';
  try {
    const parsed = new URL(redactUrl(url));
    return `${parsed.protocol}//${parsed.host}${parsed.pathname.length > 1 || parsed.search ? '/***' : ''}`;
  } catch {
    return '***';
  }
}
