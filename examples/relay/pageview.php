<?php
// One page view per request to `shardline relay`, with plain PHP sockets (no extension).
//
// The page never waits on Kinesis: it talks to the relay on this host, which answers
// "OK <event_id>" once the event is on its disk (fsynced), or "ERR <reason> <text>" at
// once. When the relay is down the connect fails at once (a unix socket nobody listens
// on is refused, no timeout involved); when it is stuck the read gives up after
// SHARDLINE_RELAY_TIMEOUT_MS. Either way the page view is DROPPED AND COUNTED (one
// error_log line, in php-fpm's log): a fallback file written from every worker on the
// request path would add a disk write to each page exactly when something is already
// wrong, and `shardline tail` turns a line into a log_lines row with an id of its own,
// not a page_views row; an outage of the relay is what supervisord's restart covers.
//
// The event carries its own event_id (a UUID made here), so a page view sent twice
// (a lost answer, a relay restart) is one row: the loader removes the copy.
//
// Settings (php-fpm pool: env[SHARDLINE_RELAY_SOCKET] = ...):
//   SHARDLINE_RELAY_SOCKET      unix:///run/shardline/relay.sock (or tcp://127.0.0.1:PORT)
//   SHARDLINE_RELAY_TIMEOUT_MS  50

function shardline_uuid4(): string
{
    $b = random_bytes(16);
    $b[6] = chr((ord($b[6]) & 0x0f) | 0x40);
    $b[8] = chr((ord($b[8]) & 0x3f) | 0x80);
    return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($b), 4));
}

/** Send one event; the relay's answer line ("OK <id>", "ERR ...") or null (not sent). */
function shardline_relay_send(array $event): ?string
{
    $address = getenv('SHARDLINE_RELAY_SOCKET') ?: 'unix:///run/shardline/relay.sock';
    $timeout = ((float)(getenv('SHARDLINE_RELAY_TIMEOUT_MS') ?: 50)) / 1000;
    $errno = 0;
    $errstr = '';
    $fp = @stream_socket_client($address, $errno, $errstr, $timeout);
    if ($fp === false) {
        error_log("shardline relay: page view dropped: cannot connect to $address: $errstr");
        return null;
    }
    stream_set_timeout($fp, 0, (int)($timeout * 1e6));
    $line = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE) . "\n";
    $answer = @fwrite($fp, $line) === strlen($line) ? fgets($fp, 1024) : false;
    fclose($fp);
    if ($answer === false) {
        error_log("shardline relay: page view dropped: no answer within {$timeout}s");
        return null;
    }
    $answer = rtrim($answer, "\n");
    if (strncmp($answer, 'OK ', 3) !== 0) {
        error_log("shardline relay: page view dropped: $answer");
    }
    return $answer;
}

function shardline_page_view(): array
{
    $sid = $_COOKIE['sid'] ?? '';
    if (!preg_match('/^[A-Za-z0-9_-]{8,64}$/', $sid)) {
        $sid = 's-' . bin2hex(random_bytes(12));
        setcookie('sid', $sid, ['path' => '/', 'httponly' => true, 'samesite' => 'Lax']);
    }
    $scheme = (!empty($_SERVER['HTTPS']) && $_SERVER['HTTPS'] !== 'off') ? 'https' : 'http';
    $host = $_SERVER['HTTP_HOST'] ?? 'unknown.invalid';
    $now = DateTime::createFromFormat('U.u', sprintf('%.6F', microtime(true)));
    return [
        'event_id' => shardline_uuid4(),
        'occurred_at' => $now->format('Y-m-d\TH:i:s.u\Z'),
        'url' => substr("$scheme://$host" . ($_SERVER['REQUEST_URI'] ?? '/'), 0, 2048),
        'referrer' => isset($_SERVER['HTTP_REFERER']) ? substr($_SERVER['HTTP_REFERER'], 0, 2048) : null,
        'user_agent' => substr($_SERVER['HTTP_USER_AGENT'] ?? '', 0, 512),
        'ip' => $_SERVER['REMOTE_ADDR'] ?? '0.0.0.0',
        'user_id' => null,
        'session_id' => $sid,
    ];
}

// The page itself: a real site includes the functions above and calls them once per view.
if (realpath($_SERVER['SCRIPT_FILENAME'] ?? '') === __FILE__) {
    $event = shardline_page_view();
    $answer = shardline_relay_send($event);
    header('Content-Type: text/plain');
    echo ($answer ?? 'DROPPED'), ' ', $event['event_id'], "\n";
}
