/** Query parameters of a connection URL whose values are secrets (`?password=`, `?token=`). */
const SECRET_PARAM = /pass|secret|token|key/i;

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
      if (SECRET_PARAM.test(key)) parsed.searchParams.set(key, '***');
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

/**
 * A scrubber for the passwords in `urls`, or undefined when none has one. The URLs are parsed once
 * here, not once per call: the process logger runs it on every line, and parsing two URLs per line
 * cost the worker about as much as writing the line.
 */
export function secretScrubber(urls: Array<string | undefined>): ((text: string) => string) | undefined {
  const forms = new Set<string>();
  for (const secret of urls.flatMap(secretsOf)) {
    forms.add(secret);
    forms.add(encodeURIComponent(secret));
    // Inside a JSON log line, quotes and backslashes in the password appear escaped.
    forms.add(JSON.stringify(secret).slice(1, -1));
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

/**
 * The secrets a connection URL carries, in every spelling a text may quote them in: the password as
 * written in the URL (`p%21ss`), as the URL parser gives it back, and decoded (`p!ss`); and the values
 * of query parameters such as `?password=`. A URL that does not parse yields what its text shows.
 */
function secretsOf(url: string | undefined): string[] {
  if (!url) return [];
  const secrets: string[] = [];
  // As written: what a driver error or a log line that quotes the configured string contains.
  const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)@/i.exec(url)?.[1];
  if (userinfo?.includes(':')) secrets.push(userinfo.slice(userinfo.indexOf(':') + 1));
  try {
    const parsed = new URL(url);
    secrets.push(parsed.password);
    for (const [key, value] of parsed.searchParams) if (SECRET_PARAM.test(key)) secrets.push(value);
  } catch {
    // Not a URL: what the text shows is all there is.
  }
  return [...new Set(secrets.flatMap((secret) => [secret, decoded(secret)]))].filter(Boolean);
}

/** `text` with its %-escapes decoded, or as it is when they do not decode (`50%off`). */
function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
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
