// Drives Converse.js in Debian's headless Chromium, as a person would, for
// tests/e2e/test_conversejs_browser.py: log in on the page xmppd serves, find
// the contact in the roster, chat with it, join a room and talk there, save a
// screenshot.
//
// Usage: node conversejs_browser.mjs '<json>' where the JSON names
// nodeModules (where playwright-core is), chromium, url, user, password,
// contact, chatOut, chatIn, room, nick, roomOut, roomIn, screenshot, timeoutMs.
//
// Each step prints one JSON line {"step": ...} on stdout, so the Python side
// can act between them (its slixmpp client answers the chat, joins the room
// once Converse.js is in it) and knows how far the browser got when a step
// fails ({"step": "error"}; exit status 1, a screenshot of that moment).

import { createRequire } from 'node:module';

const cfg = JSON.parse(process.argv[2]);
const require = createRequire(cfg.nodeModules.replace(/\/?$/, '/'));
const { chromium } = require('playwright-core');

const emit = (step, extra = {}) => console.log(JSON.stringify({ step, ...extra }));

const args = ['--disable-dev-shm-usage', '--disable-gpu', '--no-first-run'];
if (process.getuid && process.getuid() === 0) args.push('--no-sandbox'); // Chromium refuses root otherwise
const browser = await chromium.launch({ executablePath: cfg.chromium, headless: true, args });
const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
context.setDefaultTimeout(cfg.timeoutMs ?? 15000);
const page = await context.newPage();
page.on('pageerror', (error) => emit('pageerror', { text: String(error) }));
page.on('console', (message) => {
    if (message.type() === 'error') emit('console', { text: message.text() });
});
page.on('websocket', (ws) => emit('websocket', { url: ws.url() }));
page.on('request', (request) => {
    if (request.url().includes('/http-bind')) emit('bosh-request', { url: request.url() });
});

try {
    const response = await page.goto(cfg.url);
    emit('page', { status: response.status() });
    if (response.status() !== 200) throw new Error(`the page answered ${response.status()}`);

    // Log in with the bare user name: the page set default_domain.
    await page.locator('#converse-login-jid').fill(cfg.user);
    await page.locator('#converse-login-password').fill(cfg.password);
    await page.locator('#converse-login button[type=submit]').click();
    emit('login-submitted');

    // The roster shows the contact.
    const contact = page.locator('converse-roster a.open-chat', { hasText: cfg.contact });
    await contact.first().waitFor();
    emit('roster', { contacts: await page.locator('converse-roster a.open-chat').allInnerTexts() });

    // A chat: one message each way.
    await contact.first().click();
    const chat = page.locator(`converse-chat[jid="${cfg.contact}"]`);
    const chatInput = chat.locator('textarea.chat-textarea');
    await chatInput.fill(cfg.chatOut);
    await chatInput.press('Enter');
    emit('chat-sent');
    await chat.locator('.chat-msg__text', { hasText: cfg.chatIn }).waitFor();
    emit('chat-received');

    // A room: through "Add groupchat" in the rooms list.
    await page.locator('converse-rooms-list converse-dropdown button.dropdown-toggle').click();
    await page.locator('a.show-add-muc-modal').click();
    const modal = page.locator('converse-add-muc-modal');
    await modal.locator('input[name=chatroom]').fill(cfg.room);
    await modal.locator('input[name=nickname]').fill(cfg.nick);
    await modal.locator('input[type=submit][name=join]').click();
    const room = page.locator(`converse-muc[jid="${cfg.room}"]`);
    const roomInput = room.locator('textarea.chat-textarea');
    await roomInput.waitFor();
    emit('room-joined');
    await room.locator('.chat-msg__text', { hasText: cfg.roomIn }).waitFor();
    emit('room-received');
    await roomInput.fill(cfg.roomOut);
    await roomInput.press('Enter');
    await room.locator('.chat-msg__text', { hasText: cfg.roomOut }).waitFor();
    emit('room-sent');
    // Stay until the test has seen the message arrive (a transport may send
    // queued stanzas a moment after Converse shows them: BOSH batches them),
    // or the time-out passes.
    await new Promise((resolve) => {
        const timer = setTimeout(resolve, cfg.timeoutMs);
        process.stdin.once('data', () => { clearTimeout(timer); resolve(); });
    });
    process.stdin.pause();

    await page.screenshot({ path: cfg.screenshot });
    emit('done', { screenshot: cfg.screenshot });
} catch (error) {
    await page.screenshot({ path: cfg.screenshot }).catch(() => {});
    emit('error', { text: String(error && error.stack ? error.stack : error), screenshot: cfg.screenshot });
    process.exitCode = 1;
} finally {
    await browser.close();
}
