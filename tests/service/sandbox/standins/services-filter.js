'use strict';
// Stand-in for the sandbox's reducers/helpers/services-filter.js (not in the copy): used only when rendering.
exports.getServicesByHook = () => ({});
exports.getCardsFromServices = () => ({ cards: [] });
