#!/bin/sh
# The shell alternative: one curl process per batch of 100 ids, in a loop.
#   sh bench/curl_loop.sh URL TOKEN MODULE RECORD RELATED N
# Delinks ids 1..N (bench/run.lua seeded them); curl's output (one JSON body per call)
# goes to stdout, where bench/run.lua counts the "success" entries.
set -eu
base=$1 token=$2 module=$3 record=$4 related=$5 n=$6
seq -f '3477061%012.0f' 1 "$n" | xargs -n 100 | tr ' ' ',' |
while read -r ids; do
    curl -s -X DELETE -H "Authorization: Zoho-oauthtoken $token" \
        "$base/crm/v2.1/$module/$record/$related?ids=$ids"
    echo
done
