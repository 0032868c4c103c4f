// Demo helpdesk: navigates between tickets with history.pushState, like single-page helpdesks do.
'use strict';
(() => {
  const title = document.getElementById('title');
  const reply = document.getElementById('reply');
  function show() {
    const m = /^\/tickets\/([^/]+)/.exec(location.pathname);
    title.textContent = m ? 'Ticket ' + m[1] : 'Inbox';
    document.title = title.textContent + ' — demo helpdesk';
  }
  document.querySelectorAll('a[data-spa]').forEach((a) => a.addEventListener('click', (ev) => {
    ev.preventDefault();
    history.pushState(null, '', a.getAttribute('href'));
    reply.value = '';
    show();
  }));
  window.addEventListener('popstate', show);
  document.getElementById('reply-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    document.getElementById('sent').textContent = 'sent: ' + reply.value.length + ' characters';
    reply.value = '';
  });
  show();
})();
