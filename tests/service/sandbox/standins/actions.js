'use strict';
// Stand-in for the sandbox's src/actions/service-exchange-actions.js (not in the copy): plain action objects.
exports.storeExchange = (url, request, response, status, exchangeRound) => ({
  type: 'STORE_SERVICE_EXCHANGE', url, request, response, status, exchangeRound,
});
exports.storeLaunchContext = (link) => ({ type: 'STORE_LAUNCH_CONTEXT', link });
exports.dismissCard = ({ serviceUrl, cardUUID }) => ({ type: 'DISMISS_CARD', serviceUrl, cardUUID });
