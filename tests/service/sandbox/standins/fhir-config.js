'use strict';
// Stand-in for the sandbox's src/config/fhir-config.js (not in the copy): the client id and scopes it puts in
// fhirAuthorization when it has an access token. Test values; the service only checks that they are strings.
exports.productionClientId = 'cds-hooks-sandbox-test-client';
exports.allScopes = 'launch patient/*.read user/*.read openid profile';
