#!/bin/sh
# Dovecot pipes the message on stdin; $1 is the IMAP user (filterd's learning.per_user).
exec /usr/bin/spamc -d 127.0.0.1 -p 10783 -u "$1" -L spam
