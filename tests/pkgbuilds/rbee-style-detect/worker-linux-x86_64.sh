#!/bin/sh
echo "demo worker on linux-x86_64"
